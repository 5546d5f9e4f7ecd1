"""The book's data sets: the Pima diabetes table and the BUSI breast-ultrasound images.

Both ship in ``data/`` (see ``data/README.md``). Every file is checked against
``data/SHA256SUMS`` before it is used, so a damaged or edited copy is refused with a message
that names the file and how to restore it. Decoded arrays are kept in memory per checksum, so
loading a second split or size costs only the check and the resize.

BreastMNIST is not shipped; ``download_breastmnist`` fetches the official file when asked.
"""
import functools
import hashlib
import io
import lzma
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .book import paths
from .files import file_digest, sha256_file, write_bytes_atomic

MANIFEST = "SHA256SUMS"
PIMA_FILE = "pima/pima_indians_diabetes.csv"
PIMA_FEATURES = ("Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI",
                 "DiabetesPedigreeFunction", "Age")
PIMA_TARGET = "Outcome"
# A zero in these columns is a missing measurement, not a value a living person can have.
PIMA_ZERO_IS_MISSING = ("Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI")
PIMA_MISSING_MODES = ("nan", "raw")

BUSI_IMAGES = "busi/images.npy.xz"
BUSI_MASKS = "busi/masks.npy.xz"
BUSI_SPLIT = "busi/split.csv"
BUSI_METADATA = "busi/metadata.csv"
BUSI_DUPLICATES = "busi/duplicates.csv"
BUSI_CLASSES = ("normal", "benign", "malignant")
BUSI_SPLITS = ("train", "val", "test", "all")
# Images whose duplicate group mixes classes; they belong to no training or evaluation split.
EXCLUDED = "excluded"

BREASTMNIST_URL = "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"
DOWNLOAD_TIMEOUT_S = 60


class ChecksumError(ValueError):
    """A data file's bytes differ from the checksum recorded in ``data/SHA256SUMS``."""


# --- integrity ---------------------------------------------------------------------------

def restore_hint(relpath: str) -> str:
    return (f"restore it with `git checkout -- data/{relpath}`, or rebuild data/ from the "
            f"original downloads with `python scripts/make_data.py --busi <folder> --pima <csv>` "
            f"(see data/README.md)")


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_DIGEST_LENGTH = 64


def _manifest_entry(line: str):
    """``(digest, path)`` of one manifest line, or None when it is malformed.

    ``sha256sum`` writes the digest, then two spaces (text mode) or a space and ``*`` (binary
    mode), then the path; a single space is accepted as well.
    """
    digest, rest = line[:_DIGEST_LENGTH], line[_DIGEST_LENGTH:]
    if len(digest) < _DIGEST_LENGTH or not set(digest) <= _HEX_DIGITS:
        return None
    for separator in ("  ", " *", " "):
        if rest.startswith(separator):
            path = rest[len(separator):]
            return (digest, path) if path and not path[0].isspace() else None
    return None


def read_manifest(data_dir: Path) -> dict:
    """``{relative path: sha256}`` from ``data_dir/SHA256SUMS``, digests in lower case.

    Reads the formats of ``sha256sum``; blank lines are skipped. A line that is not
    ``<64 hex digits> <path>``, a path outside ``data_dir`` and a path listed twice are
    refused with ``ValueError`` naming the line.
    """
    manifest = Path(data_dir) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"the checksum list {manifest} is missing; "
                                f"{restore_hint(MANIFEST)}")
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as error:
        raise ValueError(f"{manifest} is not UTF-8 text ({error}); "
                         f"{restore_hint(MANIFEST)}") from None
    entries, seen_on = {}, {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        if not line:
            continue
        entry = _manifest_entry(line)
        where = f"{manifest}, line {number}: {line!r}"
        if entry is None:
            raise ValueError(f"{where} is not '<64 hex digits>  <path>' as sha256sum writes "
                             f"it; {restore_hint(MANIFEST)}")
        digest, path = entry[0], Path(entry[1])
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{where} names a file outside data/; paths must be relative to "
                             f"the folder of {MANIFEST}")
        relpath = path.as_posix()
        if relpath in entries:
            raise ValueError(f"{where} lists {relpath} again (first on line "
                             f"{seen_on[relpath]}); {restore_hint(MANIFEST)}")
        entries[relpath] = digest.lower()
        seen_on[relpath] = number
    return entries


def verified_path(relpath: str) -> tuple:
    """Path and SHA-256 of data file ``relpath``, after checking it against the manifest."""
    data_dir = Path(paths.DATA_DIR)
    expected = read_manifest(data_dir).get(relpath)
    if expected is None:
        raise ChecksumError(f"data/{MANIFEST} lists no checksum for {relpath}; "
                            f"{restore_hint(MANIFEST)}")
    path = data_dir / relpath
    if not path.exists():
        raise FileNotFoundError(f"data file {relpath} is missing from {data_dir}; "
                                f"{restore_hint(relpath)}")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"data file {relpath} is corrupt or was modified: its SHA-256 is "
                            f"{actual[:16]}..., data/{MANIFEST} expects {expected[:16]}...; "
                            f"{restore_hint(relpath)}")
    return path, actual


def verify_all() -> list:
    """Check every file in the manifest; returns the relative paths checked."""
    relpaths = sorted(read_manifest(Path(paths.DATA_DIR)))
    for relpath in relpaths:
        verified_path(relpath)
    return relpaths


# --- Pima --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _read_csv(path: Path, digest: str) -> pd.DataFrame:
    return pd.read_csv(path)


def read_table(relpath: str) -> pd.DataFrame:
    """A verified CSV file from ``data/`` as a fresh DataFrame."""
    return _read_csv(*verified_path(relpath)).copy()


def load_pima(missing: str = "nan") -> pd.DataFrame:
    """The Pima Indians Diabetes table: 768 rows, the 8 features and ``Outcome`` (1 = diabetes).

    ``missing="nan"`` turns the impossible zeros of Glucose, BloodPressure, SkinThickness,
    Insulin and BMI into NaN (those columns become float); ``missing="raw"`` keeps the zeros
    as the data set ships them.
    """
    if missing not in PIMA_MISSING_MODES:
        raise ValueError(f"missing must be one of {', '.join(map(repr, PIMA_MISSING_MODES))}; "
                         f"got {missing!r}")
    frame = read_table(PIMA_FILE)
    if missing == "nan":
        columns = list(PIMA_ZERO_IS_MISSING)
        frame[columns] = frame[columns].astype(float).mask(frame[columns] == 0)
    return frame


# --- BUSI --------------------------------------------------------------------------------

@dataclass
class BusiSplit:
    """Images of one BUSI split, in the order of ``data/busi/split.csv``.

    ``images``: float32 N x 1 x size x size in [0, 1]; ``labels``: int64 N (index into
    ``classes``); ``masks``: float32 N x 1 x size x size, lesion = 1 (empty for normal
    images); ``names``: the original file names; ``groups``: duplicate-group id per image
    (images with the same id show the same scan or lesion).
    """
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    names: list
    groups: torch.Tensor
    classes: tuple = BUSI_CLASSES

    def __len__(self) -> int:
        return len(self.names)


def _decompress_npy(path: Path) -> np.ndarray:
    return np.load(io.BytesIO(lzma.decompress(path.read_bytes())), allow_pickle=False)


@functools.lru_cache(maxsize=2)
def _busi_pixels(image_path: Path, image_digest: str, mask_path: Path, mask_digest: str):
    """Decoded uint8 images (N x S x S) and boolean masks, cached per checksum pair."""
    images = _decompress_npy(image_path)
    packed = _decompress_npy(mask_path)
    masks = np.unpackbits(packed, axis=-1, count=images.shape[-1]).astype(bool)
    return images, masks


def busi_table() -> pd.DataFrame:
    """``data/busi/split.csv``: one row per image (name, class, split, group), in array order."""
    return read_table(BUSI_SPLIT)


def _check_split(split) -> None:
    if split not in BUSI_SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, BUSI_SPLITS))}; "
                         f"got {split!r}")


def _check_size(size, stored: int) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int from 1 to {stored} (or None for {stored}); "
                        f"got {type(size).__name__} {size!r}")
    if not 1 <= size <= stored:
        raise ValueError(f"size must be from 1 to {stored} pixels, the stored resolution "
                         f"(or None for {stored}); got {size}")


def resize_area(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average N x C x H x W images to ``size`` x ``size`` (a no-op at the same size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def load_busi(split: str, size: int | None = None, device=None) -> BusiSplit:
    """BUSI images, labels and lesion masks of ``split`` (``train``/``val``/``test``/``all``).

    ``size`` (default: the stored 224 px) shrinks images by area averaging; masks are
    area-averaged too and thresholded at 0.5 back to {0, 1}. ``all`` returns the 780 images
    of the data set, including the few excluded from the other splits because their duplicate
    group carries contradictory labels (see ``data/README.md``). Tensors are on ``device``
    (default: the CPU).
    """
    _check_split(split)
    pixels, lesions = _busi_pixels(*verified_path(BUSI_IMAGES), *verified_path(BUSI_MASKS))
    stored = pixels.shape[-1]
    _check_size(size, stored)
    table = busi_table()
    if len(table) != len(pixels):
        raise ChecksumError(f"{BUSI_SPLIT} has {len(table)} rows but {BUSI_IMAGES} holds "
                            f"{len(pixels)} images; {restore_hint('busi/')}")
    if split == "all":
        rows = np.arange(len(table))
    else:
        rows = np.flatnonzero(table["split"].to_numpy() == split)
    size = stored if size is None else int(size)
    images = torch.from_numpy(pixels[rows]).unsqueeze(1).to(device=device, dtype=torch.float32)
    masks = torch.from_numpy(lesions[rows]).unsqueeze(1).to(device=device, dtype=torch.float32)
    images = resize_area(images / 255.0, size)
    masks = (resize_area(masks, size) >= 0.5).to(torch.float32)
    labels = torch.tensor([BUSI_CLASSES.index(c) for c in table["class"].iloc[rows]],
                          dtype=torch.int64, device=device)
    groups = torch.as_tensor(table["group"].to_numpy()[rows], dtype=torch.int64, device=device)
    return BusiSplit(images=images, labels=labels, masks=masks,
                     names=table["name"].iloc[rows].tolist(), groups=groups)


def busi_metadata() -> pd.DataFrame:
    """Per-image facts from the original files: width, height, colour annotations, masks, pHash."""
    return read_table(BUSI_METADATA)


def busi_duplicates() -> pd.DataFrame:
    """Pairs of near-duplicate images found by perceptual hashing (see ``data/README.md``)."""
    return read_table(BUSI_DUPLICATES)


# Rows of busi_split_summary: the three splits, their union, the excluded images, all images.
_SUMMARY_ROWS = {"train": ("train",), "val": ("val",), "test": ("test",),
                 "train+val+test": ("train", "val", "test"), EXCLUDED: (EXCLUDED,),
                 "all": ("train", "val", "test", EXCLUDED)}
_GROUP_SIZE_BINS = {"in groups of 1": (1, 1), "in groups of 2": (2, 2),
                    "in groups of 3": (3, 3), "in groups of 4+": (4, np.inf)}


def busi_split_summary() -> pd.DataFrame:
    """Class counts and duplicate-group sizes of each BUSI split, from ``data/busi/split.csv``.

    One row each for ``train``, ``val``, ``test``, their union ``train+val+test``,
    ``excluded`` and ``all``. Columns: ``images``; the image count of each class; ``groups``,
    the number of duplicate groups (a single image is a group of one); ``in groups of 1`` to
    ``in groups of 4+``, the number of *images* whose group has that many images;
    ``duplicate share``, the fraction of images that belong to a group of two or more.
    """
    table = busi_table()
    group_size = table.groupby("group")["name"].transform("size").to_numpy()
    rows = {}
    for label, splits in _SUMMARY_ROWS.items():
        chosen = table["split"].isin(splits).to_numpy()
        classes = table.loc[chosen, "class"]
        sizes = group_size[chosen]
        row = {"images": int(chosen.sum())}
        row.update({cls: int((classes == cls).sum()) for cls in BUSI_CLASSES})
        row["groups"] = int(table.loc[chosen, "group"].nunique())
        for column, (low, high) in _GROUP_SIZE_BINS.items():
            row[column] = int(((sizes >= low) & (sizes <= high)).sum())
        row["duplicate share"] = float((sizes > 1).mean()) if len(sizes) else float("nan")
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# --- BreastMNIST (download on request) -----------------------------------------------------

def download_breastmnist(root=None) -> Path:
    """Path of ``breastmnist.npz`` (MedMNIST, 28 px) under ``root``, downloading it if needed.

    ``root`` defaults to ``~/.medmnist``, where the ``medmnist`` package looks. The file comes
    from MedMNIST's Zenodo record and is checked against its official MD5. Without a network
    connection this raises ``ConnectionError`` saying where to put a copy by hand.
    """
    root = Path(root) if root is not None else Path.home() / ".medmnist"
    target = root / "breastmnist.npz"
    if target.exists() and file_digest(target, "md5") == BREASTMNIST_MD5:
        return target
    try:
        with urllib.request.urlopen(BREASTMNIST_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(
            f"could not download BreastMNIST from {BREASTMNIST_URL} ({error}); this needs the "
            f"internet. Offline, copy breastmnist.npz (MD5 {BREASTMNIST_MD5}) to {target} "
            f"by hand") from None
    actual = hashlib.md5(payload).hexdigest()
    if actual != BREASTMNIST_MD5:
        raise ChecksumError(f"the downloaded BreastMNIST file has MD5 {actual}, expected "
                            f"{BREASTMNIST_MD5}; nothing was saved. Try again later")
    write_bytes_atomic(target, payload)
    return target
