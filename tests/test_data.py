"""The shipped data sets: canonical counts, the leakage-safe split, integrity checks, downloads."""
import hashlib
import importlib.util
import shutil
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib import data
from lib.book import paths

PIMA_ZEROS = {"Glucose": 5, "BloodPressure": 35, "SkinThickness": 227, "Insulin": 374, "BMI": 11}


@pytest.fixture(scope="module")
def busi_all():
    return data.load_busi("all")


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of data/ that the loaders read instead of the real one."""
    copy = tmp_path / "data"
    shutil.copytree(paths.DATA_DIR, copy)
    monkeypatch.setattr(paths, "DATA_DIR", copy)
    return copy


def load_make_data():
    spec = importlib.util.spec_from_file_location("make_data",
                                                  paths.ROOT / "scripts" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Pima ----------------------------------------------------------------------------------

def test_pima_has_the_canonical_rows_columns_and_classes():
    frame = data.load_pima(missing="raw")
    assert list(frame.columns) == [*data.PIMA_FEATURES, "Outcome"]
    assert len(frame) == 768
    assert frame["Outcome"].value_counts().to_dict() == {0: 500, 1: 268}
    # Column means of the verified original; altered copies in circulation differ here.
    np.testing.assert_allclose(frame[list(data.PIMA_FEATURES)].mean().to_numpy(),
                               [3.845, 120.895, 69.105, 20.536, 79.799, 31.993, 0.4719, 33.241],
                               atol=6e-4)


def test_pima_impossible_zeros_become_nan_and_raw_keeps_them():
    raw, clean = data.load_pima(missing="raw"), data.load_pima()
    assert clean.isna().sum()[clean.isna().sum() > 0].to_dict() == PIMA_ZEROS
    for column in PIMA_ZEROS:
        assert (raw[column] == 0).sum() == PIMA_ZEROS[column]
        kept = raw[column] != 0
        np.testing.assert_array_equal(clean.loc[kept, column], raw.loc[kept, column])
    assert (raw["Pregnancies"] == 0).sum() > 0 and clean["Pregnancies"].notna().all()


def test_pima_returns_a_fresh_frame_each_call():
    first = data.load_pima()
    first.loc[0, "Glucose"] = -1.0
    assert data.load_pima().loc[0, "Glucose"] == 148


def test_pima_rejects_an_unknown_missing_mode():
    with pytest.raises(ValueError, match="'nan', 'raw'"):
        data.load_pima(missing="zero")


# --- BUSI ----------------------------------------------------------------------------------

def test_busi_all_has_the_canonical_counts_shapes_and_ranges(busi_all):
    assert len(busi_all) == 780
    assert busi_all.classes == ("normal", "benign", "malignant")
    assert torch.bincount(busi_all.labels).tolist() == [133, 437, 210]
    assert busi_all.images.shape == busi_all.masks.shape == (780, 1, 224, 224)
    assert busi_all.images.dtype == busi_all.masks.dtype == torch.float32
    assert busi_all.labels.dtype == torch.int64
    assert 0 <= busi_all.images.min() and busi_all.images.max() <= 1
    assert set(busi_all.masks.unique().tolist()) == {0.0, 1.0}
    assert len(set(busi_all.names)) == 780
    assert all(name.startswith(busi_all.classes[label] + " (")
               for name, label in zip(busi_all.names, busi_all.labels.tolist()))


def lesion_contrast(images, masks):
    """Mean brightness of a 4-pixel ring around each mask minus the mean inside it."""
    ring = F.max_pool2d(masks, 9, stride=1, padding=4) - masks
    inside = (images * masks).sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))
    return (images * ring).sum(dim=(1, 2, 3)) / ring.sum(dim=(1, 2, 3)) - inside


def test_busi_masks_belong_to_their_images(busi_all):
    lesion_pixels = busi_all.masks.sum(dim=(1, 2, 3))
    normal = busi_all.labels == 0
    assert (lesion_pixels[normal] == 0).all()
    assert (lesion_pixels[~normal] > 0).all()
    # Lesions are darker than their rim in almost every image; a mask paired with the wrong
    # image is not.
    images, masks = busi_all.images[~normal], busi_all.masks[~normal]
    assert (lesion_contrast(images, masks) > 0).float().mean() > 0.95
    assert (lesion_contrast(images, masks.roll(1, dims=0)) > 0).float().mean() < 0.7


def test_busi_splits_partition_the_non_excluded_images(busi_all):
    table = data.busi_table()
    parts = {split: data.load_busi(split, size=16) for split in ("train", "val", "test")}
    names = [name for part in parts.values() for name in part.names]
    assert len(names) == len(set(names))
    excluded = set(table.loc[table["split"] == data.EXCLUDED, "name"])
    assert set(names) == set(busi_all.names) - excluded
    assert len(excluded) == 18
    for split, part in parts.items():
        rows = [busi_all.names.index(name) for name in part.names]
        assert torch.equal(part.labels, busi_all.labels[rows])
        assert torch.equal(part.groups, busi_all.groups[rows])


def test_busi_split_is_stratified_and_keeps_duplicate_groups_together():
    table = data.busi_table()
    kept = table[table["split"] != data.EXCLUDED]
    assert (kept.groupby("group")["split"].nunique() == 1).all()
    assert (kept.groupby("group")["class"].nunique() == 1).all()
    shares = kept.groupby("class")["split"].value_counts(normalize=True)
    for cls in data.BUSI_CLASSES:
        np.testing.assert_allclose([shares[cls, s] for s in ("train", "val", "test")],
                                   [0.70, 0.15, 0.15], atol=0.03)


def test_busi_excluded_groups_are_exactly_those_with_contradictory_labels():
    table = data.busi_table()
    classes_per_group = table.groupby("group")["class"].nunique()
    mixed = set(classes_per_group[classes_per_group > 1].index)
    assert set(table.loc[table["split"] == data.EXCLUDED, "group"]) == mixed
    row = table.set_index("name").loc[["benign (433).png", "malignant (145).png"]]
    assert row["group"].nunique() == 1 and (row["split"] == data.EXCLUDED).all()


def test_busi_duplicate_pairs_are_within_their_groups():
    table = data.busi_table().set_index("name")
    pairs = data.busi_duplicates()
    assert (pairs["phash_distance"] <= 10).all()
    assert (table.loc[pairs["name_a"], "group"].to_numpy()
            == table.loc[pairs["name_b"], "group"].to_numpy()).all()
    identical = pairs[pairs["identical_pixels"]]
    assert {tuple(p) for p in identical[["name_a", "name_b"]].to_numpy()} == {
        ("benign (433).png", "malignant (145).png")}


def test_busi_smaller_sizes_average_areas_and_keep_masks_binary(busi_all):
    small = data.load_busi("all", size=56)
    assert small.images.shape == small.masks.shape == (780, 1, 56, 56)
    # 224 -> 56 is exact 4 x 4 block averaging.
    expected = busi_all.images[:5].reshape(5, 1, 56, 4, 56, 4).mean(dim=(3, 5))
    torch.testing.assert_close(small.images[:5], expected)
    assert set(small.masks.unique().tolist()) == {0.0, 1.0}
    lesion_share = busi_all.masks.mean(dim=(1, 2, 3))
    torch.testing.assert_close(small.masks.mean(dim=(1, 2, 3)), lesion_share, atol=0.02, rtol=0)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"split": "training"}, ValueError, "'train', 'val', 'test', 'all'"),
    ({"split": "train", "size": 256}, ValueError, "from 1 to 224"),
    ({"split": "train", "size": 0}, ValueError, "from 1 to 224"),
    ({"split": "train", "size": 64.0}, TypeError, "must be an int"),
    ({"split": "train", "size": True}, TypeError, "must be an int"),
])
def test_busi_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        data.load_busi(**kwargs)


# --- integrity -----------------------------------------------------------------------------

def test_manifest_covers_every_shipped_data_file():
    listed = set(data.read_manifest(paths.DATA_DIR))
    on_disk = {p.relative_to(paths.DATA_DIR).as_posix() for p in paths.DATA_DIR.rglob("*")
               if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}
    assert listed == on_disk
    assert data.verify_all() == sorted(listed)


def test_readme_lists_the_current_checksums():
    readme = (paths.DATA_DIR / "README.md").read_text()
    for line in (paths.DATA_DIR / data.MANIFEST).read_text().splitlines():
        assert line in readme


def test_a_corrupt_copy_is_refused_with_the_file_and_the_remedy(data_copy):
    images = data_copy / data.BUSI_IMAGES
    payload = bytearray(images.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    images.write_bytes(bytes(payload))
    with pytest.raises(data.ChecksumError, match=r"busi/images\.npy\.xz.*git checkout"):
        data.load_busi("train")


def test_an_edited_table_is_refused(data_copy):
    pima = data_copy / data.PIMA_FILE
    pima.write_text(pima.read_text().replace("6,148,72", "6,140,72", 1))
    with pytest.raises(data.ChecksumError, match="pima_indians_diabetes.csv"):
        data.load_pima()


def test_a_missing_file_is_named_with_the_remedy(data_copy):
    (data_copy / data.BUSI_MASKS).unlink()
    with pytest.raises(FileNotFoundError, match=r"busi/masks\.npy\.xz.*make_data\.py"):
        data.load_busi("all")


def test_a_missing_manifest_is_reported(data_copy):
    (data_copy / data.MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="SHA256SUMS"):
        data.load_pima()


# --- BreastMNIST download --------------------------------------------------------------------

class FakeResponse:
    def __init__(self, payload):
        self.payload = payload

    def read(self):
        return self.payload

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_offline_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="needs the internet.*breastmnist.npz"):
        data.download_breastmnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_rejects_a_payload_with_the_wrong_md5(tmp_path, monkeypatch):
    monkeypatch.setattr(data.urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(b"not the data set"))
    with pytest.raises(data.ChecksumError, match="MD5"):
        data.download_breastmnist(tmp_path)
    assert not (tmp_path / "breastmnist.npz").exists()


def test_download_saves_a_verified_payload_and_reuses_it(tmp_path, monkeypatch):
    payload = b"pretend npz"
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(data, "BREASTMNIST_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    path = data.download_breastmnist(tmp_path)
    assert path == tmp_path / "breastmnist.npz" and path.read_bytes() == payload
    assert data.download_breastmnist(tmp_path) == path
    assert requested == [data.BREASTMNIST_URL]


# --- the build script's grouping and splitting ------------------------------------------------

def test_union_groups_joins_chains_and_names_groups_by_first_member():
    make_data = load_make_data()
    groups = make_data.union_groups(6, [(4, 1, 0, False), (1, 3, 2, False), (0, 5, 8, False)])
    assert groups.tolist() == [0, 1, 2, 1, 1, 0]


def test_assign_splits_keeps_groups_whole_and_excludes_mixed_ones():
    make_data = load_make_data()
    rng = np.random.default_rng(1)
    classes = np.repeat(["normal", "benign", "malignant"], [60, 200, 100])
    groups = np.arange(len(classes))
    groups[10:14] = 10                      # a same-class group of four
    groups[70] = groups[260] = 70           # a benign and a malignant copy of one image
    order = rng.permutation(len(classes))
    splits = make_data.assign_splits(classes[order], groups[order],
                                     {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    by_group = {}
    for group, split in zip(groups[order], splits):
        by_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    assert by_group[70] == {data.EXCLUDED}
    assert (splits == data.EXCLUDED).sum() == 2
    for cls, total in (("normal", 60), ("benign", 199), ("malignant", 99)):
        counts = {s: int(((classes[order] == cls) & (splits == s)).sum())
                  for s in ("train", "val", "test")}
        assert sum(counts.values()) == total
        assert abs(counts["val"] - 0.15 * total) <= 4 and abs(counts["test"] - 0.15 * total) <= 4
