"""Chapter discovery, parameters, profile overrides and the lib modules each chapter uses."""
import json
import subprocess
import sys

import pytest
import yaml

from lib.book import chapters, knobs, paths, profiles


def test_every_chapter_has_profile_and_seed_knobs():
    for chapter in chapters.all_chapters():
        defaults = chapter.defaults()
        assert defaults["profile"] == profiles.DEFAULT_PROFILE, chapter.stem
        assert isinstance(defaults["seed"], int), chapter.stem


def test_profile_overrides_name_real_chapters_and_parameters():
    stems = {c.stem for c in chapters.all_chapters()}
    for profile, by_chapter in profiles.OVERRIDES.items():
        for stem, values in by_chapter.items():
            assert stem in stems, f"{profile} overrides unknown chapter {stem}"
            resolved = chapters.resolve(chapters.find(stem), profile)
            assert resolved["profile"] == profile
            for name, value in values.items():
                assert resolved[name] == value


def test_no_code_cell_is_swallowed_by_a_stray_fence():
    # An unclosed ``` in prose turns every later code cell into markdown text.
    for chapter in chapters.all_chapters():
        for cell in chapter.notebook().cells:
            if cell.cell_type == "markdown":
                assert "{code-cell}" not in cell.source, chapter.stem


HIDDEN_INPUT = {"remove-cell", "remove-input", "hide-input"}


def test_visible_code_fits_the_column():
    # book/contributing.md: code a reader sees is at most 79 characters wide.
    too_long = [f"{chapter.stem}: {line.strip()[:50]}"
                for chapter in chapters.all_chapters()
                for cell in chapter.notebook().cells
                if cell.cell_type == "code"
                and not HIDDEN_INPUT & set(cell.metadata.get("tags", []))
                for line in cell.source.splitlines() if len(line) > 79]
    assert not too_long, too_long


def test_toc_lists_every_chapter_in_order():
    toc = yaml.safe_load((paths.ROOT / "_toc.yml").read_text())
    listed = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    in_toc = [f.split("/")[1] for f in listed if f.startswith("notebooks/")]
    assert in_toc == [c.stem for c in chapters.all_chapters()]


def test_find_accepts_stem_and_refuses_unknown_with_the_valid_names():
    first = chapters.all_chapters()[0]
    assert chapters.find(first.stem) == first
    with pytest.raises(ValueError, match=f"valid chapters: .*{first.stem}"):
        chapters.find("no-such-chapter")


def test_unknown_parameter_is_refused_with_the_valid_ones():
    chapter = chapters.all_chapters()[0]
    with pytest.raises(ValueError, match="unknown parameter.*nonsense.*valid parameters: profile, seed"):
        chapters.resolve(chapter, "smoke", {"nonsense": 1})


def test_parameter_types_are_checked_against_defaults():
    chapter = chapters.all_chapters()[0]
    assert chapters.resolve(chapter, "smoke", {"seed": 3})["seed"] == 3
    with pytest.raises(knobs.KnobError, match="seed must be a int"):
        chapters.resolve(chapter, "smoke", {"seed": "three"})
    with pytest.raises(knobs.KnobError):
        chapters.resolve(chapter, "smoke", {"seed": True})


def test_unknown_profile_lists_the_valid_ones_and_the_old_name_still_works():
    with pytest.raises(ValueError, match="valid profiles: smoke, book, full"):
        profiles.check_profile("huge")
    assert profiles.check_profile("paper") == "full"


def test_assignments_parse_literals_and_fall_back_to_strings():
    parsed = knobs.parse_assignments(["N=1024", "lr=1e-3", "arch=vgg16", "dims=[1, 2]"])
    assert parsed == {"N": 1024, "lr": 1e-3, "arch": "vgg16", "dims": [1, 2]}
    with pytest.raises(ValueError, match="name=value"):
        knobs.parse_assignments(["N1024"])


def test_assignments_rejoin_lists_split_at_spaces_and_refuse_repeats_and_profile():
    assert knobs.parse_assignments(["deltas=[0.1,", "1.0]", "seed=2"]) == {
        "deltas": [0.1, 1.0], "seed": 2}
    assert knobs.parse_assignments(["name='a", "b'"]) == {"name": "a b"}
    with pytest.raises(knobs.KnobError, match="given twice"):
        knobs.parse_assignments(["seed=1", "seed=2"])
    with pytest.raises(knobs.KnobError, match="use --profile"):
        knobs.parse_assignments(["profile=full"])
    with pytest.raises(knobs.KnobError, match="unbalanced"):
        knobs.parse_assignments(["deltas=[0.1,"])


def test_knob_rules_are_read_from_the_comments_and_enforced():
    declared = knobs.parse("profile = 'book'\nN = 32  # [4 <= N <= 4096] base samples\n"
                           "n = None  # [n is None or n >= 1]\nlabel = 'a'  # just words\n")
    assert declared["N"].rule == "4 <= N <= 4096" and declared["N"].description == "base samples"
    assert declared["label"].rule is None and declared["label"].description == "just words"
    assert declared["N"].check(4096) == 4096 and declared["n"].check(None) is None
    with pytest.raises(knobs.KnobError, match=r"N = 2 is not allowed; it must satisfy 4 <= N"):
        declared["N"].check(2, "ch")
    with pytest.raises(knobs.KnobError, match="n = 'x' is not allowed"):
        declared["n"].check("x")  # a rule that raises refuses the value
    long = knobs.parse("# a section header\n# [len(names) > 0\n#  and all(isinstance(n, str) for n in names)]\n"
                       "names = [\n    'a',\n]  # the names\n")["names"]
    assert long.rule == "len(names) > 0 and all(isinstance(n, str) for n in names)"
    assert long.description == "the names" and long.check(["b"]) == ["b"]
    with pytest.raises(knobs.KnobError, match="names = \\[1\\] is not allowed"):
        long.check([1])
    with pytest.raises(knobs.KnobError, match="sets N twice"):
        knobs.parse("N = 1  # [N > 0]\nN = 2\n")
    with pytest.raises(knobs.KnobError, match="not a Python expression"):
        knobs.parse("N = 1  # [N >]\n")


def test_cli_refuses_unknown_parameter_with_a_helpful_message():
    stem = chapters.all_chapters()[0].stem
    result = subprocess.run([sys.executable, "-m", "lib", "run", stem, "--profile", "smoke",
                             "bogus=1"], capture_output=True, text=True, cwd=paths.ROOT)
    assert result.returncode == 2
    assert "unknown parameter(s) bogus" in result.stderr
    assert "valid parameters: profile, seed" in result.stderr


def test_cli_refuses_unknown_chapter_and_profile():
    result = subprocess.run([sys.executable, "-m", "lib", "run", "nope"], capture_output=True,
                            text=True, cwd=paths.ROOT)
    assert result.returncode == 2 and "valid chapters:" in result.stderr
    stem = chapters.all_chapters()[0].stem
    result = subprocess.run([sys.executable, "-m", "lib", "run", stem, "--profile", "huge"],
                            capture_output=True, text=True, cwd=paths.ROOT)
    assert result.returncode == 2 and "valid profiles: smoke, book, full" in result.stderr


def test_the_colab_setup_comes_from_one_place():
    for chapter in chapters.all_chapters():
        assert "find_spec(\"lib\")" not in chapter.path.read_text(), chapter.stem
        notebook = chapters.launch_notebook(chapter)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code[0].source == chapters.COLAB_SETUP and "parameters" in code[1].metadata.tags


def test_launch_notebooks_match_their_sources():
    for chapter in chapters.all_chapters():
        stored = chapter.path.with_suffix(".ipynb")
        assert stored.exists(), f"{stored.name} missing: run `make notebooks`"
        expected = chapters.launch_notebook(chapter)
        actual = json.loads(stored.read_text())
        assert [(c.cell_type, c.source) for c in expected.cells] == \
            [(c["cell_type"], "".join(c["source"])) for c in actual["cells"]], \
            f"{stored.name} is out of date: run `make notebooks`"
