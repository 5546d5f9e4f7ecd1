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


def check_fractions(fractions: dict) -> None:
    if not fractions or any(not 0 < share < 1 for share in fractions.values()) \
            or abs(sum(fractions.values()) - 1) > 1e-9:
        raise ValueError(f"fractions must map split names to shares in (0, 1) that sum to 1; "
                         f"got {fractions!r}")


def deal(stream, sizes: dict, fractions: dict) -> dict:
    """``{group: split}``: each group in turn to the split furthest below its target images.

    The target of a split is its fraction of all the images in ``stream``; ties go to the
    split named first in ``fractions``.
    """
    total = sum(sizes[g] for g in stream)
    filled = dict.fromkeys(fractions, 0)
    chosen = {}
    for group in stream:
        split = max(fractions, key=lambda s: fractions[s] * total - filled[s])
        chosen[group] = split
        filled[split] += sizes[group]
    return chosen


def assign_splits(classes, groups, fractions: dict, seed: int) -> np.ndarray:
    """Seeded stratified group split; groups whose images disagree on the class are excluded.

    ``classes`` and ``groups``: one entry per image; returns the split name of each image.
    Per class, the groups are shuffled with ``seed`` and dealt in two streams, groups of
    several images and single images, each with ``deal``. Every split so receives its
    fraction of each class and of the duplicate images by construction (up to one group),
    while which group lands where is random. A group always lands whole in one split.
    """
    check_fractions(fractions)
    classes, groups = np.asarray(classes), np.asarray(groups)
    if classes.shape != groups.shape or classes.ndim != 1:
        raise ValueError(f"classes and groups must be 1-D with one entry per image; got shapes "
                         f"{classes.shape} and {groups.shape}")
    unknown = sorted(set(classes.tolist()) - set(shipped.BUSI_CLASSES))
    if unknown:
        raise ValueError(f"classes must be among {shipped.BUSI_CLASSES}; got {unknown}")
    splits = np.full(len(classes), shipped.EXCLUDED, dtype=object)
    rng = np.random.default_rng(seed)
    names, sizes = np.unique(groups, return_counts=True)
    size_of = dict(zip(names.tolist(), sizes.tolist()))
    classes_of = {g: set(classes[groups == g].tolist()) for g in size_of}
    for cls in shipped.BUSI_CLASSES:
        pure = [g for g in size_of if classes_of[g] == {cls}]
        shuffled = [pure[k] for k in rng.permutation(len(pure))]
        for stream in ([g for g in shuffled if size_of[g] > 1],
                       [g for g in shuffled if size_of[g] == 1]):
            for group, split in deal(stream, size_of, fractions).items():
                splits[groups == group] = split
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


def data_files(out: Path) -> list:
    """Relative paths of the files under ``out`` that its manifest must list, in path order."""
    return [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in NOT_IN_MANIFEST]


def write_manifest(out: Path) -> None:
    lines = [f"{files.sha256_file(out / rel)}  {rel}" for rel in data_files(out)]
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
    """Check ``out`` against its SHA256SUMS without the originals: 0 when all is well, else 1.

    Names every listed file that is missing or whose bytes differ, and every file in ``out``
    the manifest leaves out (README.md and the manifest itself need no entry).
    """
    try:
        listed = shipped.read_manifest(out)
    except (FileNotFoundError, ValueError) as error:
        print(f"FAILED {error}")
        return 1
    problems = 0
    for rel, digest in sorted(listed.items()):
        path = out / rel
        if not path.is_file():
            print(f"MISSING {rel}: listed in {shipped.MANIFEST} but not in {out}")
        elif (actual := files.sha256_file(path)) != digest:
            print(f"CORRUPT {rel}: its SHA-256 is {actual}, {shipped.MANIFEST} expects {digest}")
        else:
            continue
        problems += 1
    for rel in sorted(set(data_files(out)) - set(listed)):
        print(f"UNLISTED {rel}: in {out} but not in {shipped.MANIFEST}; remove it, or "
              f"rebuild data/ to list it")
        problems += 1
    if problems:
        print(f"{problems} problem(s) in {out}; {shipped.restore_hint('<file>')}")
        return 1
    print(f"all {len(listed)} files match {out / shipped.MANIFEST}")
    return 0


def same_content(first: Path, second: Path) -> bool:
    if first.name.endswith(".npy.xz"):
        try:
            return np.array_equal(*(shipped._decompress_npy(p) for p in (first, second)))
        except (lzma.LZMAError, EOFError, ValueError):
            return False
    return first.read_bytes() == second.read_bytes()


def digests(folder: Path) -> dict:
    """``{relative path: sha256}`` of every built file in ``folder`` and of its manifest."""
    built = data_files(folder)
    if (folder / shipped.MANIFEST).is_file():
        built.append(shipped.MANIFEST)
    return {rel: files.sha256_file(folder / rel) for rel in built}


def check(busi: Path, pima: Path, out: Path, size: int = SIZE) -> int:
    """Rebuild into a temporary folder and compare every file with ``out``, byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        build(busi, pima, Path(tmp), size)
        rebuilt, present = digests(Path(tmp)), digests(out)
        status = 0
        for rel in sorted(set(rebuilt) | set(present)):
            if rebuilt.get(rel) == present.get(rel):
                continue
            status = 1
            if rel not in present:
                print(f"MISSING {rel}: the build makes it, {out} lacks it")
            elif rel not in rebuilt:
                print(f"EXTRA {rel}: in {out}, but the build does not make it")
            elif same_content(out / rel, Path(tmp) / rel):
                print(f"DIFFERS {rel} (same decoded content: only the compressor's output "
                      f"differs)")
            else:
                print(f"DIFFERS {rel}")
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
