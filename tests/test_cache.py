"""The on-disk cache: atomic writes, integrity checks, keys that see every input."""
import pytest
import torch

from lib.book import cache, paths


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    return tmp_path


def test_cached_torch_computes_once_then_loads(cache_dir):
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(5.0)}

    first = cache.cached_torch("results", "demo", "k1", compute)
    second = cache.cached_torch("results", "demo", "k1", compute)
    assert len(calls) == 1
    assert torch.equal(first["w"], second["w"])


def test_corrupt_entry_is_recomputed_not_loaded(cache_dir, capsys):
    cache.cached_torch("results", "demo", "k1", lambda: torch.ones(3))
    entry = cache.entry_path("results", "demo", "k1", ".pt")
    entry.write_bytes(entry.read_bytes()[:20])  # truncated, as after a crash
    value = cache.cached_torch("results", "demo", "k1", lambda: torch.zeros(3))
    assert torch.equal(value, torch.zeros(3))
    assert "corrupt" in capsys.readouterr().out
    assert cache.is_valid(entry)


def test_failed_write_leaves_no_entry(cache_dir):
    target = cache_dir / "x" / "entry.bin"

    def write(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.store(target, write)
    assert not target.exists()
    assert list((cache_dir / "x").iterdir()) == []


def test_entry_without_sidecar_is_invalid(cache_dir):
    target = cache_dir / "entry.bin"
    target.write_bytes(b"data")
    assert not cache.is_valid(target)


def test_make_key_is_stable_and_sensitive():
    assert cache.make_key(a=1, b=[1, 2]) == cache.make_key(b=[1, 2], a=1)
    assert cache.make_key(a=1) != cache.make_key(a=2)


