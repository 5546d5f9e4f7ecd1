"""Chapter discovery, parameters, profile overrides and the lib modules each chapter uses."""
import json
import subprocess
import sys

import pytest
import yaml

from lib.book import chapters, paths, profiles


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
    with pytest.raises(TypeError, match="'seed' must be int"):
        chapters.resolve(chapter, "smoke", {"seed": "three"})
    with pytest.raises(TypeError):
        chapters.resolve(chapter, "smoke", {"seed": True})
    assert chapters.check_type("lr", 1, 0.5) == 1.0
    with pytest.raises(TypeError):
        chapters.check_type("flag", 1, False)


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid profiles: smoke, book, paper"):
        profiles.check_profile("huge")


def test_assignments_parse_literals_and_fall_back_to_strings():
    parsed = chapters.parse_assignments(["N=1024", "lr=1e-3", "arch=vgg16", "dims=[1, 2]"])
    assert parsed == {"N": 1024, "lr": 1e-3, "arch": "vgg16", "dims": [1, 2]}
    with pytest.raises(ValueError, match="name=value"):
        chapters.parse_assignments(["N1024"])


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
    assert result.returncode == 2 and "valid profiles: smoke, book, paper" in result.stderr


def test_launch_notebooks_match_their_sources():
    for chapter in chapters.all_chapters():
        stored = chapter.path.with_suffix(".ipynb")
        assert stored.exists(), f"{stored.name} missing: run `make notebooks`"
        expected = chapters.launch_notebook(chapter)
        actual = json.loads(stored.read_text())
        assert [(c.cell_type, c.source) for c in expected.cells] == \
            [(c["cell_type"], "".join(c["source"])) for c in actual["cells"]], \
            f"{stored.name} is out of date: run `make notebooks`"
