"""On-disk cache for expensive results, keyed by everything they depend on.

A key hashes the configuration, the source of the ``lib`` modules involved (their import
closure, ``lib.book.imports``), the data
checksums and the pinned toolchain, so an edit to any of them produces a new key: a stale
result is never served. Writes go to a temporary file that is renamed into place, so an
interrupted run leaves no half-written entry; each entry carries its SHA-256 and an entry
whose bytes do not match is treated as missing.
"""
import hashlib
import json
from pathlib import Path

import torch

from ..files import atomic_path, sha256_bytes, sha256_file, write_bytes_atomic
from . import paths


def data_digest() -> str:
    """Hash of the data checksum manifest; the loaders verify every file against it."""
    manifest = paths.DATA_DIR / "SHA256SUMS"
    return sha256_file(manifest) if manifest.exists() else "no-data-manifest"


def toolchain_digest() -> str:
    digest = hashlib.sha256()
    for lock in paths.LOCK_FILES:
        digest.update(lock.read_bytes() if lock.exists() else b"no-lock")
    return digest.hexdigest()


def make_key(**parts) -> str:
    """A short, stable key for a JSON-serialisable description of a result."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return sha256_bytes(text.encode())[:20]


def entry_path(kind: str, name: str, key: str, suffix: str) -> Path:
    return paths.CACHE_DIR / kind / f"{name}-{key}{suffix}"


def is_valid(path: Path) -> bool:
    """True when ``path`` and its ``.sha256`` sidecar exist, can be read, and agree.

    An unreadable sidecar or entry is not an error: the entry is simply not valid, and is
    computed again.
    """
    sidecar = path.with_name(path.name + ".sha256")
    if not (path.exists() and sidecar.exists()):
        return False
    try:
        return sidecar.read_text(encoding="ascii").strip() == sha256_file(path)
    except (OSError, UnicodeDecodeError):
        return False


def describe_invalid(path: Path) -> str:
    """Why the existing entry ``path`` is not used, for the log."""
    return f"cache: {path} is corrupt, incomplete or unreadable; computing it again"


def store(path: Path, write) -> None:
    """Write an entry with ``write(tmp_path)``, then its checksum sidecar.

    A crash between the two leaves an entry without a sidecar, which ``is_valid`` rejects.
    """
    with atomic_path(path) as tmp:
        write(tmp)
    write_bytes_atomic(path.with_name(path.name + ".sha256"), sha256_file(path).encode())


def cached_torch(kind: str, name: str, key: str, compute, *, verbose=True):
    """Load ``kind/name-key.pt`` if it is intact, else ``compute()`` it and store it.

    ``compute`` returns anything ``torch.save`` accepts (tensors, state dicts, dicts of them).
    A corrupt or truncated entry is reported and recomputed, never loaded.
    """
    path = entry_path(kind, name, key, ".pt")
    if path.exists():
        if is_valid(path):
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except Exception:  # intact bytes that do not load: made by another torch
                pass
        if verbose:
            print(describe_invalid(path))
    value = compute()
    store(path, lambda tmp: torch.save(value, tmp))
    return value
