#!/usr/bin/env python
"""Build the book's ``data/`` from the original downloads, byte for byte.

  python scripts/make_data.py --busi Dataset_BUSI_with_GT --pima diabetes.csv [--out data]
  python scripts/make_data.py --check --busi Dataset_BUSI_with_GT --pima diabetes.csv
  python scripts/make_data.py --check          (no originals: verify data/ against SHA256SUMS)

``--busi`` is the folder holding ``benign/``, ``malignant/`` and ``normal/`` with
``<name>.png`` and ``<name>_mask*.png`` as the BUSI authors distribute them; ``--pima`` is the
768-row Pima CSV with the Kaggle header. What is built and why is described in data/README.md.
"""
import argparse
import io
import lzma
import re
import sys
import tempfile
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lib import files  # noqa: E402
from lib import data as shipped  # noqa: E402
from lib.progress import progress  # noqa: E402

SIZE = 224
RESAMPLE = Image.Resampling.BOX  # area averaging: no ringing, no invented detail
MASK_THRESHOLD = 0.5
PHASH_MAX_DISTANCE = 10  # of 64 bits; chosen by looking at the pairs at 6 to 14
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
SPLIT_SEED = 0
BUSI_COUNTS = {"normal": 133, "benign": 437, "malignant": 210}
PIMA_ROWS = 768
# Delta coding of neighbouring pixels, then LZMA2: ~10 % smaller than LZMA2 alone here.
XZ_FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
NOT_IN_MANIFEST = {"README.md", shipped.MANIFEST}


# --- reading the originals -----------------------------------------------------------------

def image_number(path: Path) -> int:
    match = re.fullmatch(r"\w+ \((\d+)\)", path.stem)
    if match is None:
        raise ValueError(f"unexpected BUSI file name {path.name!r}; expected '<class> (<n>).png'")
    return int(match.group(1))


def busi_files(folder: Path) -> list:
    """``(class, image path, [mask paths])`` for every image, classes in BUSI_CLASSES order."""
    entries = []
    for cls in shipped.BUSI_CLASSES:
        class_dir = folder / cls
        if not class_dir.is_dir():
            raise FileNotFoundError(f"{class_dir} is missing; --busi must be the folder that "
                                    f"holds {', '.join(shipped.BUSI_CLASSES)}/")
        images = sorted((p for p in class_dir.glob("*.png") if "_mask" not in p.name),
                        key=image_number)
        if len(images) != BUSI_COUNTS[cls]:
            raise ValueError(f"{class_dir} holds {len(images)} images; the BUSI release has "
                             f"{BUSI_COUNTS[cls]}")
        for image in images:
            masks = sorted(class_dir.glob(f"{glob_escape(image.stem)}_mask*.png"))
            if not masks:
                raise FileNotFoundError(f"{image.name} has no mask file in {class_dir}")
            entries.append((cls, image, masks))
    return entries


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def is_colour(image: Image.Image) -> bool:
    """True when the R, G and B planes differ somewhere (coloured annotations)."""
    if image.mode in ("L", "1"):
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def merged_mask(mask_paths, shape) -> np.ndarray:
    """The union of an image's lesion masks (some images have two or three)."""
    union = np.zeros(shape, dtype=bool)
    for path in mask_paths:
        mask = np.asarray(Image.open(path).convert("L")) > 127
        if mask.shape != shape:
            raise ValueError(f"{path.name} is {mask.shape[::-1]}, its image is {shape[::-1]}")
        union |= mask
    return union


def shrink(array: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image or float mask to size x size with RESAMPLE."""
    return np.asarray(Image.fromarray(array).resize((size, size), RESAMPLE))


def read_scan(cls: str, image_path: Path, mask_paths, size: int) -> dict:
    """One BUSI image at ``size`` px, its merged mask, and facts about the original file."""
    original = Image.open(image_path)
    # PIL's luma weights sum to 1, so R=G=B files and their grayscale copies give equal bytes.
    gray = original.convert("L")
    pixels = np.asarray(gray)
    mask = merged_mask(mask_paths, pixels.shape)
    return {
        "name": image_path.name, "class": cls,
        "width": gray.width, "height": gray.height, "colour": is_colour(original),
        "masks": len(mask_paths), "phash": str(imagehash.phash(gray)),
        "pixels_sha256": files.sha256_bytes(repr(pixels.shape).encode() + pixels.tobytes()),
        "image": shrink(pixels, size),
        "mask": shrink(mask.astype(np.float32), size) >= MASK_THRESHOLD,
    }


def read_busi(folder: Path, size: int) -> list:
    files = busi_files(folder)
    return [read_scan(cls, image, masks, size)
            for cls, image, masks in progress(files, desc="reading BUSI", unit="image")]


# --- duplicates and the split --------------------------------------------------------------

def hash_bits(hex_hashes) -> np.ndarray:
    return np.stack([imagehash.hex_to_hash(h).hash.ravel() for h in hex_hashes])


def duplicate_pairs(hex_hashes, pixel_digests, max_distance: int) -> list:
    """``(i, j, distance, identical)`` for i < j with pHash distance <= max_distance."""
    bits = hash_bits(hex_hashes)
    distances = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    first, second = np.nonzero(np.triu(distances <= max_distance, k=1))
    return [(int(i), int(j), int(distances[i, j]), pixel_digests[i] == pixel_digests[j])
            for i, j in zip(first, second)]


def union_groups(count: int, pairs) -> np.ndarray:
    """Connected components of the pair graph; each group is named by its first member."""
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, *_ in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(count)])


def assign_splits(classes, groups, fractions: dict, seed: int) -> np.ndarray:
    """Stratified, group-aware split; groups whose images disagree on the class are excluded.

    Per class, groups are taken largest first (random order among equal sizes) and each goes
    to the split that is furthest below its target number of images.
    """
    classes, groups = np.asarray(classes), np.asarray(groups)
    splits = np.full(len(classes), shipped.EXCLUDED, dtype=object)
    rng = np.random.default_rng(seed)
    for cls in shipped.BUSI_CLASSES:
        pure = [g for g in np.unique(groups[classes == cls])
                if set(classes[groups == g]) == {cls}]
        shuffled = [pure[k] for k in rng.permutation(len(pure))]
        ordered = sorted(shuffled, key=lambda g: -int((groups == g).sum()))
        total = sum(int((groups == g).sum()) for g in ordered)
        filled = dict.fromkeys(fractions, 0)
        for group in ordered:
            chosen = max(fractions, key=lambda s: fractions[s] * total - filled[s])
            members = groups == group
            splits[members] = chosen
            filled[chosen] += int(members.sum())
    return splits


# --- writing ---------------------------------------------------------------------------------

def write_npy_xz(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    path.write_bytes(lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ,
                                   check=lzma.CHECK_CRC64, filters=XZ_FILTERS))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, lineterminator="\n")


def write_pima(source: Path, out: Path) -> None:
    frame = pd.read_csv(source)
    expected = [*shipped.PIMA_FEATURES, shipped.PIMA_TARGET]
    if list(frame.columns) != expected:
        raise ValueError(f"{source} has columns {list(frame.columns)}; expected {expected}")
    if len(frame) != PIMA_ROWS or not frame[shipped.PIMA_TARGET].isin([0, 1]).all():
        raise ValueError(f"{source} has {len(frame)} rows; the Pima table has {PIMA_ROWS} "
                         f"with Outcome 0 or 1")
    write_csv(frame, out / shipped.PIMA_FILE)


def write_busi(scans: list, out: Path) -> dict:
    names = [s["name"] for s in scans]
    classes = [s["class"] for s in scans]
    pairs = duplicate_pairs([s["phash"] for s in scans], [s["pixels_sha256"] for s in scans],
                            PHASH_MAX_DISTANCE)
    groups = union_groups(len(scans), pairs)
    splits = assign_splits(classes, groups, SPLIT_FRACTIONS, SPLIT_SEED)
    write_npy_xz(out / shipped.BUSI_IMAGES, np.stack([s["image"] for s in scans]))
    masks = np.stack([s["mask"] for s in scans])
    write_npy_xz(out / shipped.BUSI_MASKS, np.packbits(masks, axis=-1))
    write_csv(pd.DataFrame({"name": names, "class": classes, "split": splits, "group": groups}),
              out / shipped.BUSI_SPLIT)
    facts = ["name", "class", "width", "height", "colour", "masks", "phash"]
    write_csv(pd.DataFrame([{k: s[k] for k in facts} for s in scans]), out / shipped.BUSI_METADATA)
    write_csv(pd.DataFrame(
        [{"name_a": names[i], "class_a": classes[i], "name_b": names[j], "class_b": classes[j],
          "phash_distance": d, "identical_pixels": same} for i, j, d, same in pairs]),
        out / shipped.BUSI_DUPLICATES)
    return {"pairs": len(pairs), "groups": len(set(groups[np.bincount(groups)[groups] > 1])),
            "excluded": int((splits == shipped.EXCLUDED).sum())}


def write_manifest(out: Path) -> None:
    lines = [f"{files.sha256_file(p)}  {p.relative_to(out).as_posix()}"
             for p in sorted(out.rglob("*")) if p.is_file() and p.name not in NOT_IN_MANIFEST]
    (out / shipped.MANIFEST).write_text("\n".join(lines) + "\n")


def build(busi: Path, pima: Path, out: Path, size: int = SIZE) -> None:
    for sub in ("pima", "busi"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_pima(pima, out)
    summary = write_busi(read_busi(busi, size), out)
    write_manifest(out)
    print(f"wrote {out}: {summary['pairs']} near-duplicate pairs in {summary['groups']} groups, "
          f"{summary['excluded']} images excluded for contradictory labels")


# --- checking --------------------------------------------------------------------------------

def verify(out: Path) -> int:
    """Check the files of ``out`` against its SHA256SUMS (no originals needed)."""
    bad = [rel for rel, digest in shipped.read_manifest(out).items()
           if not (out / rel).exists() or files.sha256_file(out / rel) != digest]
    for rel in bad:
        print(f"FAILED {rel}: missing or different from {shipped.MANIFEST}")
    print(f"{len(shipped.read_manifest(out)) - len(bad)} files match {out / shipped.MANIFEST}")
    return 1 if bad else 0


def same_content(first: Path, second: Path) -> bool:
    if first.name.endswith(".npy.xz"):
        return np.array_equal(*(shipped._decompress_npy(p) for p in (first, second)))
    return first.read_bytes() == second.read_bytes()


def check(busi: Path, pima: Path, out: Path, size: int = SIZE) -> int:
    """Rebuild into a temporary folder and compare every file with ``out``, byte for byte."""
    expected = shipped.read_manifest(out)
    with tempfile.TemporaryDirectory() as tmp:
        build(busi, pima, Path(tmp), size)
        rebuilt = shipped.read_manifest(Path(tmp))
        status = 0
        for rel in sorted(set(expected) | set(rebuilt)):
            if expected.get(rel) == rebuilt.get(rel):
                continue
            status = 1
            note = ""
            if rel in expected and rel in rebuilt and same_content(out / rel, Path(tmp) / rel):
                note = " (same decoded content: only the compressor's output differs)"
            print(f"DIFFERS {rel}{note}")
    print("data/ is reproduced byte for byte" if status == 0 else "data/ is NOT reproduced")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busi", type=Path, help="folder with benign/ malignant/ normal/")
    parser.add_argument("--pima", type=Path, help="the Pima Indians Diabetes CSV")
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    parser.add_argument("--size", type=int, default=SIZE, help="stored side length in pixels")
    parser.add_argument("--check", action="store_true",
                        help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    if args.check and args.busi is None and args.pima is None:
        return verify(args.out)
    if args.busi is None or args.pima is None:
        parser.error("--busi and --pima are both needed (or --check alone)")
    if args.check:
        return check(args.busi, args.pima, args.out, args.size)
    build(args.busi, args.pima, args.out, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
