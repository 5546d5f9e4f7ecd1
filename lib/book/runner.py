"""Execute chapters with papermill (cached), and render the book with Jupyter Book.

An executed chapter is reused only when its key is unchanged: the key hashes the chapter's
source, the source of every ``lib`` module it uses and of the machinery that runs it, the
data checksums, the resolved parameters and the pinned toolchain. A chapter that fails leaves
nothing in the cache.

A build owns only what it makes: the staged sources go to a fresh folder that replaces
``_build/src`` only if that folder holds nothing but an earlier staging, and builds into the
same output folder take turns on a lock.
"""
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from ..files import locked, sha256_file
from . import cache, chapters, console, imports, paths, profiles

KERNEL_NAME = "nnsa-book"
STAGED_FILES = ("_config.yml", "_toc.yml")
STAGED_DIRS = ("book",)
# Lists what a staging wrote, so that the next one can tell its own files from a user's.
STAGED_LIST = ".staged-files"
# The kernel logs only what would stop it: no start-up warnings, no shutdown notices.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


class ChapterFailed(RuntimeError):
    """A chapter raised while it ran; the message holds the failing cell's traceback."""


def chapter_key(chapter, params: dict) -> str:
    return cache.make_key(
        chapter=sha256_file(chapter.path),
        # the chapter's own modules, and the machinery that executes it
        lib=imports.source_digest(chapter.lib_modules() | imports.closure([__name__])),
        data=cache.data_digest(),
        params=params,
        toolchain=cache.toolchain_digest(),
        python=platform.python_version(),
    )


def ensure_kernel() -> None:
    """Register this interpreter as the kernel chapters run in, once per environment."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (nn sensitivity book)",
                prefix=sys.prefix)


def execute(chapter, params: dict, target: Path) -> None:
    """Run ``chapter`` with ``params`` and write the executed notebook to ``target`` atomically."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # The knobs are checked against their rules before this point; papermill's own reading of
    # the parameters cell skips lines whose rule holds '<=' and would warn about them.
    logging.getLogger("papermill").setLevel(logging.ERROR)

    ensure_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{chapter.stem}.ipynb"
        notebook = chapter.notebook()
        nbformat.write(notebook, source)
        executed = Path(tmp) / "executed.ipynb"
        try:
            with console.forwarded_progress():
                papermill.execute_notebook(
                    str(source), str(executed), parameters=params, kernel_name=KERNEL_NAME,
                    cwd=str(chapter.path.parent), progress_bar=False,
                    request_save_on_cell_execute=False, extra_arguments=KERNEL_ARGUMENTS,
                    # papermill adds a cell for the injected parameters
                    on_cell_start=console.cell_announcer(chapter.stem, len(notebook.cells) + 1))
        except PapermillExecutionError as error:
            raise ChapterFailed(console.plain(
                f"chapter {chapter.stem} failed in cell {error.exec_count}:\n"
                + "\n".join(error.traceback))) from None
        notebook = nbformat.read(executed, as_version=4)
        for cell in notebook.cells:
            tags = cell.metadata.get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        cache.store(target, lambda path: nbformat.write(notebook, path))


def executed_chapter(chapter, profile: str, log=print) -> Path:
    """The executed notebook of ``chapter`` at ``profile``, from the cache when it is current."""
    params = chapters.resolve(chapter, profile)
    target = cache.entry_path("chapters", chapter.stem, chapter_key(chapter, params), ".ipynb")
    start = time.perf_counter()
    if cache.is_valid(target):
        log(f"  {chapter.stem}: up to date (cached)")
        return target
    if target.exists():
        log(f"  {cache.describe_invalid(target)}")
    log(f"  {chapter.stem}: executing at profile {profile} ...")
    execute(chapter, params, target)
    log(f"  {chapter.stem}: done in {time.perf_counter() - start:.1f} s")
    return target


def stage(executed: dict, source_dir: Path) -> None:
    """Lay out the book's sources with the executed notebooks in place of the .md chapters.

    The layout is built in a fresh folder next to ``source_dir`` and renamed into place. An
    existing ``source_dir`` is replaced only when it holds exactly what an earlier staging
    wrote; anything else in it is left alone and the build stops with a message.
    """
    source_dir.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".src-", dir=source_dir.parent))
    try:
        (fresh / "notebooks").mkdir()
        for name in STAGED_FILES:
            shutil.copy2(paths.ROOT / name, fresh / name)
        for name in STAGED_DIRS:
            shutil.copytree(paths.ROOT / name, fresh / name)
        for stem, notebook in executed.items():
            shutil.copy2(notebook, fresh / "notebooks" / f"{stem}.ipynb")
        (fresh / STAGED_LIST).write_text("\n".join(_files_below(fresh)) + "\n")
        _replace_staging(fresh, source_dir)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh)


def _files_below(folder: Path) -> list:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _replace_staging(fresh: Path, target: Path) -> None:
    if target.exists():
        listed = target / STAGED_LIST
        # an earlier staging lists its files; one from before the list existed looks like ours
        ours = set(listed.read_text().split() if listed.is_file() else _files_below(fresh))
        foreign = [name for name in _files_below(target) if name not in ours | {STAGED_LIST}]
        if foreign:
            raise RuntimeError(
                f"{target} holds files this book did not stage ({', '.join(foreign[:5])}); "
                f"nothing was deleted. Move them away, or build into another folder with "
                f"--output-root")
        old = target.with_name(f".{target.name}-old-{fresh.name}")
        target.rename(old)
        fresh.rename(target)
        shutil.rmtree(old)
    else:
        fresh.rename(target)


def render(source_dir: Path, output_root: Path) -> Path:
    """Render the staged book to ``output_root/_build/html``, failing on any warning."""
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source_dir),
               "--path-output", str(output_root), "--builder", "html", "-W", "-n",
               "--keep-going", "--all"]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError("the book did not render cleanly (warnings are errors); see above")
    return output_root / "_build" / "html"


def build(profile: str = profiles.DEFAULT_PROFILE, output_root=None, html=True, log=print):
    """Execute every chapter (cached) at ``profile`` and render the book.

    The staged sources go to ``output_root/_build/src`` and the HTML to
    ``output_root/_build/html`` (``output_root`` defaults to the repository). Returns the path
    of ``index.html``, or of the staged sources when ``html`` is false.
    """
    profile = profiles.check_profile(profile)
    output_root = Path(output_root or paths.ROOT)
    lock = output_root / "_build" / ".build.lock"
    with locked(lock, on_wait=lambda: log(f"Waiting for another build into {output_root} "
                                          f"(lock {lock}) ...")):
        return _build(profile, output_root, html, log)


def _build(profile, output_root, html, log):
    all_chapters = chapters.all_chapters()
    log(f"Executing {len(all_chapters)} chapters at profile {profile}")
    start = time.perf_counter()
    executed = {}
    for chapter in all_chapters:
        executed[chapter.stem] = executed_chapter(chapter, profile, log=log)
    log(f"All chapters ready in {time.perf_counter() - start:.1f} s")
    source_dir = output_root / "_build" / "src"
    stage(executed, source_dir)
    if not html:
        return source_dir
    index = render(source_dir, output_root) / "index.html"
    log(f"The book is at {index}")
    return index


def run(name: str, profile: str, overrides: dict, runs_dir=None) -> Path:
    """Execute one chapter with ``overrides`` into ``runs/``; returns the executed notebook."""
    chapter = chapters.find(name)
    params = chapters.resolve(chapter, profile, overrides)
    runs_dir = Path(runs_dir or paths.RUNS_DIR)
    target = runs_dir / f"{chapter.stem}-{profile}-{chapter_key(chapter, params)[:10]}.ipynb"
    execute(chapter, params, target)
    return target
