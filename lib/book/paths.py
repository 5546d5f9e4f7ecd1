"""Where the book keeps its data, caches and chapter sources.

Every location can be moved with an environment variable, so a reader can keep caches on a
bigger disk or point the book at a copy of the data elsewhere.
"""
import os
from pathlib import Path

LIB_DIR = Path(__file__).resolve().parent.parent
ROOT = LIB_DIR.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
BOOK_DIR = ROOT / "book"
DATA_DIR = Path(os.environ.get("NNSA_DATA_DIR", ROOT / "data"))
CACHE_DIR = Path(os.environ.get("NNSA_CACHE_DIR", ROOT / ".cache"))
RUNS_DIR = ROOT / "runs"
LOCK_FILES = (ROOT / "requirements" / "book.txt",)
