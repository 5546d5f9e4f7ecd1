"""Execute chapters with papermill (cached), and render the book with Jupyter Book.

An executed chapter is reused only when its key is unchanged: the key hashes the chapter's
source, the source of every ``lib`` module it uses, the data checksums, the resolved
parameters and the pinned toolchain. A chapter that fails leaves nothing in the cache.
"""
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from ..files import sha256_file
from . import cache, chapters, console, imports, paths, profiles

KERNEL_NAME = "nnsa-book"
STAGED_FILES = ("_config.yml", "_toc.yml")
STAGED_DIRS = ("book",)


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

    ensure_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{chapter.stem}.ipynb"
        nbformat.write(chapter.notebook(), source)
        executed = Path(tmp) / "executed.ipynb"
        try:
            with console.forwarded_progress():
                papermill.execute_notebook(
                    str(source), str(executed), parameters=params, kernel_name=KERNEL_NAME,
                    cwd=str(chapter.path.parent), progress_bar=False,
                    request_save_on_cell_execute=False)
        except PapermillExecutionError as error:
            raise ChapterFailed(f"chapter {chapter.stem} failed in cell {error.exec_count}:\n"
                                + "\n".join(error.traceback)) from None
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
    log(f"  {chapter.stem}: executing at profile {profile} ...")
    execute(chapter, params, target)
    log(f"  {chapter.stem}: done in {time.perf_counter() - start:.1f} s")
    return target


def stage(executed: dict, source_dir: Path) -> None:
    """Lay out the book's sources with the executed notebooks in place of the .md chapters."""
    if source_dir.exists():
        shutil.rmtree(source_dir)
    (source_dir / "notebooks").mkdir(parents=True)
    for name in STAGED_FILES:
        shutil.copy2(paths.ROOT / name, source_dir / name)
    for name in STAGED_DIRS:
        shutil.copytree(paths.ROOT / name, source_dir / name)
    for stem, notebook in executed.items():
        shutil.copy2(notebook, source_dir / "notebooks" / f"{stem}.ipynb")


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
