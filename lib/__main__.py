"""Command line: ``python -m lib build | run | list | train | notebooks``.

  python -m lib build --profile smoke          execute every chapter (cached), render the book
  python -m lib run 02-sobol-method N=4096     re-run one chapter with other parameters
  python -m lib list                           chapters, their parameters and the profiles
  python -m lib train --profile book           train the CNNs (several at a time on a CPU)
  python -m lib notebooks                      refresh notebooks/*.ipynb (Colab/Binder copies)
"""
import argparse
import sys

from .book import chapters, knobs, paths, profiles, runner


def list_chapters() -> None:
    """Every chapter's knobs: book value, rule, description, and the other profiles' values."""
    for chapter in chapters.all_chapters():
        print(chapter.stem)
        for name, knob in chapter.knobs().items():
            by_profile = {p: profiles.OVERRIDES[p].get(chapter.stem, {}).get(name)
                          for p in profiles.PROFILES}
            shown = ", ".join(f"{p}={v!r}" for p, v in by_profile.items() if v is not None)
            print(f"    {knob.describe()}" + (f"    ({shown})" if shown else ""))
            if knob.description:
                print(f"        {knob.description}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="execute every chapter and render the book")
    build.add_argument("--profile", default=profiles.DEFAULT_PROFILE)
    build.add_argument("--output-root", default=None,
                       help="folder that gets _build/src and _build/html (default: the repository)")
    build.add_argument("--no-html", action="store_true", help="execute chapters only")
    run = commands.add_parser("run", help="re-run one chapter with other parameters")
    run.add_argument("chapter", help="the chapter's file stem, e.g. 02-sobol-method")
    run.add_argument("params", nargs="*", metavar="name=value")
    run.add_argument("--profile", default=profiles.DEFAULT_PROFILE)
    run.add_argument("--runs-dir", default=None)
    commands.add_parser("list", help="list chapters and their parameters")
    train = commands.add_parser("train", help="train the networks the chapters load, in "
                                              "parallel where that is faster")
    train.add_argument("--profile", default=profiles.DEFAULT_PROFILE)
    train.add_argument("--jobs", type=int, default=None,
                       help="trainings at a time (default: one per core on a CPU, 1 on a GPU)")
    commands.add_parser("notebooks", help="write the .ipynb copies that launch buttons open")
    # name=value pairs may follow options (`run ch --profile smoke N=8`), which argparse
    # leaves unparsed; anything else left over is an error.
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "run" or any("=" not in item for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.params += extra
    try:
        if args.command == "build":
            runner.build(args.profile, args.output_root, html=not args.no_html)
        elif args.command == "run":
            path = runner.run(args.chapter, profiles.check_profile(args.profile),
                              knobs.parse_assignments(args.params), args.runs_dir)
            print(path)
        elif args.command == "train":
            from .ultrasound import pretrain
            pretrain.train_all(profiles.check_profile(args.profile), args.jobs)
        elif args.command == "notebooks":
            for path in chapters.write_launch_notebooks():
                print(path.relative_to(paths.ROOT))
        else:
            list_chapters()
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except runner.ChapterFailed as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
