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


def split_shares(classes, groups, splits):
    """Per split (and ``whole``, the three together): class proportions and duplicate share."""
    classes, groups, splits = map(np.asarray, (classes, groups, splits))
    ids, sizes = np.unique(groups, return_counts=True)
    duplicated = dict(zip(ids.tolist(), (sizes > 1).tolist()))
    in_duplicate_group = np.array([duplicated[g] for g in groups.tolist()])
    shares = {}
    for name in ("train", "val", "test", "whole"):
        chosen = splits != data.EXCLUDED if name == "whole" else splits == name
        shares[name] = {cls: (classes[chosen] == cls).mean() for cls in data.BUSI_CLASSES}
        shares[name]["duplicates"] = in_duplicate_group[chosen].mean()
    return shares


def test_shipped_split_matches_the_class_and_duplicate_shares_of_the_whole():
    table = data.busi_table()
    shares = split_shares(table["class"], table["group"], table["split"])
    assert 0.40 < shares["whole"]["duplicates"] < 0.43      # 317 of 762 images
    for split in ("train", "val", "test"):
        for cls in data.BUSI_CLASSES:
            assert abs(shares[split][cls] - shares["whole"][cls]) < 0.04, (split, cls)
        assert abs(shares[split]["duplicates"] - shares["whole"]["duplicates"]) < 0.03, split


def test_no_duplicate_group_straddles_two_splits():
    table = data.busi_table()
    assert (table.groupby("group")["split"].nunique() == 1).all()
    sizes = table.groupby("group")["name"].transform("size")
    for split in ("train", "val", "test"):
        assert (sizes[table["split"] == split] > 1).sum() > 0, split


def test_shipped_split_is_what_the_build_script_assigns():
    make_data = load_make_data()
    table = data.busi_table()
    splits = make_data.assign_splits(table["class"], table["group"], make_data.SPLIT_FRACTIONS,
                                     make_data.SPLIT_SEED)
    assert splits.tolist() == table["split"].tolist()


def test_split_summary_counts_classes_and_group_sizes():
    summary = data.busi_split_summary()
    assert list(summary.index) == ["train", "val", "test", "train+val+test", "excluded", "all"]
    sizes = ["in groups of 1", "in groups of 2", "in groups of 3", "in groups of 4+"]
    assert (summary[list(data.BUSI_CLASSES)].sum(axis=1) == summary["images"]).all()
    assert (summary[sizes].sum(axis=1) == summary["images"]).all()
    assert (summary.loc[["train", "val", "test"]].sum() == summary.loc["train+val+test"]).drop(
        "duplicate share").all()
    assert summary.loc["all", "images"] == 780 and summary.loc["excluded", "images"] == 18
    assert summary.loc["all", list(data.BUSI_CLASSES)].tolist() == [133, 437, 210]
    # 149 groups of two or more hold 335 images (data/README.md), the other 445 stand alone.
    assert summary.loc["all", "in groups of 1"] == 445
    assert summary.loc["all", "groups"] == 445 + 149
    assert summary.loc["excluded", "duplicate share"] == 1.0
    table = data.busi_table()
    for split in ("train", "val", "test"):
        part = table[table["split"] == split]
        assert summary.loc[split, "groups"] == part["group"].nunique()
        assert summary.loc[split, "duplicate share"] == pytest.approx(
            1 - summary.loc[split, "in groups of 1"] / len(part))


def test_split_summary_on_a_small_table(tmp_path, monkeypatch):
    rows = [("normal (1).png", "normal", "train", 0), ("normal (2).png", "normal", "val", 1),
            ("benign (1).png", "benign", "train", 2), ("benign (2).png", "benign", "train", 2),
            ("benign (3).png", "benign", "test", 4), ("benign (4).png", "benign", "test", 4),
            ("benign (5).png", "benign", "test", 4), ("malignant (1).png", "malignant",
                                                        "excluded", 7)]
    rows += [(f"malignant ({k}).png", "malignant", "train", 8) for k in range(2, 7)]
    rows.append(("benign (6).png", "benign", "excluded", 7))
    (tmp_path / "busi").mkdir()
    split_csv = tmp_path / data.BUSI_SPLIT
    split_csv.write_text("name,class,split,group\n"
                         + "".join(f"{n},{c},{s},{g}\n" for n, c, s, g in rows))
    digest = hashlib.sha256(split_csv.read_bytes()).hexdigest()
    (tmp_path / data.MANIFEST).write_text(f"{digest}  {data.BUSI_SPLIT}\n")
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    summary = data.busi_split_summary()
    columns = ["images", "normal", "benign", "malignant", "groups", "in groups of 1",
               "in groups of 2", "in groups of 3", "in groups of 4+"]
    assert summary.loc["train", columns].tolist() == [8, 1, 2, 5, 3, 1, 2, 0, 5]
    assert summary.loc["val", columns].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 0]
    assert summary.loc["test", columns].tolist() == [3, 0, 3, 0, 1, 0, 0, 3, 0]
    assert summary.loc["excluded", columns].tolist() == [2, 0, 1, 1, 1, 0, 2, 0, 0]
    assert summary.loc["all", columns].tolist() == [14, 2, 6, 6, 6, 2, 4, 3, 5]
    assert summary.loc["train", "duplicate share"] == pytest.approx(7 / 8)
    assert summary.loc["val", "duplicate share"] == 0.0
    assert summary.loc["train+val+test", "duplicate share"] == pytest.approx(10 / 12)


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


# --- manifest parsing and make_data.py --check ------------------------------------------------

SMALL_FILES = {"pima/table.csv": b"a,b\n1,2\n", "busi/split.csv": b"name,class\nx,benign\n"}


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """A two-file data folder with its manifest and README, read by the loaders instead of data/."""
    folder = tmp_path / "data"
    for rel, payload in SMALL_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(payload)
    (folder / "README.md").write_text("not listed in the manifest\n")
    load_make_data().write_manifest(folder)
    monkeypatch.setattr(paths, "DATA_DIR", folder)
    return folder


def digest_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def write_manifest_text(folder, text):
    (folder / data.MANIFEST).write_text(text)


def run_check(folder, capsys):
    status = load_make_data().main(["--check", "--out", str(folder)])
    return status, capsys.readouterr().out


def test_write_manifest_lists_the_files_in_sha256sum_format(small_data):
    assert (small_data / data.MANIFEST).read_text() == "".join(
        f"{digest_of(SMALL_FILES[rel])}  {rel}\n" for rel in ("busi/split.csv", "pima/table.csv"))


@pytest.mark.parametrize("separator", ["  ", " *", " "])
@pytest.mark.parametrize("upper", [False, True])
def test_manifest_accepts_sha256sum_formats_in_any_case(small_data, separator, upper):
    lines = []
    for rel, payload in SMALL_FILES.items():
        digest = digest_of(payload)
        lines.append(f"{digest.upper() if upper else digest}{separator}{rel}")
    write_manifest_text(small_data, "\n".join(lines) + "\n")
    assert data.read_manifest(small_data) == {rel: digest_of(p) for rel, p in SMALL_FILES.items()}
    assert data.verify_all() == sorted(SMALL_FILES)


def test_manifest_skips_blank_lines_and_tolerates_crlf_and_a_byte_order_mark(small_data):
    first, second = (f"{digest_of(p)}  {rel}" for rel, p in SMALL_FILES.items())
    (small_data / data.MANIFEST).write_bytes(
        f"\ufeff\r\n{first}\r\n   \r\n\r\n{second}\r\n\r\n".encode("utf-8"))
    assert data.read_manifest(small_data) == {rel: digest_of(p) for rel, p in SMALL_FILES.items()}


@pytest.mark.parametrize("bad_line", [
    "not a checksum line",
    "{digest}",                             # no path
    "{digest}busi/split.csv",               # no separator
    "{short}  busi/split.csv",              # 63 digits
    "{digest}0  busi/split.csv",            # 65 digits
    "{nonhex}  busi/split.csv",
    "{digest}   busi/split.csv",            # the path would start with a space
    "SHA256 (busi/split.csv) = {digest}",   # BSD format
])
def test_manifest_refuses_a_malformed_line_with_its_number_and_text(small_data, bad_line):
    digest = digest_of(SMALL_FILES["busi/split.csv"])
    bad_line = bad_line.format(digest=digest, short=digest[:-1], nonhex="g" + digest[1:])
    good = f"{digest_of(SMALL_FILES['pima/table.csv'])}  pima/table.csv"
    write_manifest_text(small_data, f"{good}\n\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"SHA256SUMS, line 3: ") as caught:
        data.read_manifest(small_data)
    assert repr(bad_line) in str(caught.value)


def test_manifest_refuses_a_repeated_path_and_paths_outside_the_folder(small_data):
    digest = digest_of(SMALL_FILES["busi/split.csv"])
    write_manifest_text(small_data, f"{digest}  busi/split.csv\n{digest}  ./busi/split.csv\n")
    with pytest.raises(ValueError, match=r"line 2: .* again \(first on line 1\)"):
        data.read_manifest(small_data)
    for path in ("../secret.csv", "/etc/passwd", "busi/../../x"):
        write_manifest_text(small_data, f"{digest}  {path}\n")
        with pytest.raises(ValueError, match="line 1: .*outside data/"):
            data.read_manifest(small_data)


def test_check_alone_passes_an_intact_folder(small_data, capsys):
    status, out = run_check(small_data, capsys)
    assert status == 0 and "all 2 files match" in out


def test_check_alone_passes_an_upper_case_single_space_manifest(small_data, capsys):
    write_manifest_text(small_data, "".join(f"{digest_of(p).upper()} {rel}\n\n"
                                            for rel, p in SMALL_FILES.items()))
    status, out = run_check(small_data, capsys)
    assert status == 0 and "all 2 files match" in out


def test_check_alone_reports_a_missing_manifest_without_a_traceback(small_data, capsys):
    (small_data / data.MANIFEST).unlink()
    status, out = run_check(small_data, capsys)
    assert status == 1 and "SHA256SUMS is missing" in out and "git checkout" in out


def test_check_alone_reports_a_malformed_manifest_by_line(small_data, capsys):
    with open(small_data / data.MANIFEST, "a") as handle:
        handle.write("garbage\n")
    status, out = run_check(small_data, capsys)
    assert status == 1 and "line 3: 'garbage'" in out


def test_check_alone_names_missing_corrupt_and_unlisted_files(small_data, capsys):
    (small_data / "pima/table.csv").unlink()
    edited = b"name,class\nx,malignant\n"
    (small_data / "busi/split.csv").write_bytes(edited)
    (small_data / "busi/extra.npy").write_bytes(b"stray")
    (small_data / "notes.txt").write_text("stray")
    status, out = run_check(small_data, capsys)
    assert status == 1
    assert "MISSING pima/table.csv" in out
    assert f"CORRUPT busi/split.csv: its SHA-256 is {digest_of(edited)}" in out
    assert "UNLISTED busi/extra.npy" in out and "UNLISTED notes.txt" in out
    assert "README.md" not in out.replace("data/README.md", "")
    assert "4 problem(s)" in out


@pytest.mark.parametrize("fault, expected", [
    ("missing file", "MISSING pima/table.csv"),
    ("corrupt file", "CORRUPT busi/split.csv"),
    ("unlisted file", "UNLISTED busi/extra.csv"),
])
def test_check_alone_fails_on_each_single_fault(small_data, capsys, fault, expected):
    if fault == "missing file":
        (small_data / "pima/table.csv").unlink()
    elif fault == "corrupt file":
        (small_data / "busi/split.csv").write_bytes(b"changed")
    else:
        (small_data / "busi/extra.csv").write_bytes(b"stray")
    status, out = run_check(small_data, capsys)
    assert status == 1 and expected in out and "1 problem(s)" in out


def test_check_with_originals_compares_the_bytes_of_every_file(small_data, tmp_path, capsys,
                                                               monkeypatch):
    make_data = load_make_data()
    reference = tmp_path / "reference"
    shutil.copytree(small_data, reference)
    monkeypatch.setattr(make_data, "build", lambda busi, pima, out, size=224: shutil.copytree(
        reference, out, dirs_exist_ok=True))

    def check():
        status = make_data.main(["--check", "--busi", "b", "--pima", "p", "--out",
                                 str(small_data)])
        return status, capsys.readouterr().out

    assert check() == (0, "data/ is reproduced byte for byte\n")
    (small_data / data.MANIFEST).unlink()
    status, out = check()
    assert status == 1 and "MISSING SHA256SUMS" in out
    shutil.copy(reference / data.MANIFEST, small_data / data.MANIFEST)
    # A corrupt file with an intact manifest is caught too: the files themselves are compared.
    (small_data / "busi/split.csv").write_bytes(b"changed")
    (small_data / "busi/stray.csv").write_bytes(b"stray")
    status, out = check()
    assert status == 1 and "DIFFERS busi/split.csv" in out and "EXTRA busi/stray.csv" in out
    assert "NOT reproduced" in out


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


def synthetic_population(seed=0):
    """Classes and group ids of a BUSI-like set: per class, single images and groups of 2-7.

    Group ids are shuffled integers, so nothing about a group's place in the list follows
    from its size or class. Two mixed-class groups (a benign/malignant pair, a normal/benign
    triple) must end up excluded.
    """
    rng = np.random.default_rng(seed)
    layout = {"normal": (70, [2] * 25 + [3] * 4 + [4]), "benign": (220, [2] * 80 + [3] * 12
                                                                      + [4] * 4 + [7]),
              "malignant": (170, [2] * 14 + [3] * 2)}
    classes, groups, next_id = [], [], 0
    for cls, (singles, sizes) in layout.items():
        for size in [1] * singles + sizes:
            classes += [cls] * size
            groups += [next_id] * size
            next_id += 1
    for mixed in (["benign", "malignant"], ["normal", "benign", "benign"]):
        classes += mixed
        groups += [next_id] * len(mixed)
        next_id += 1
    relabel = rng.permutation(next_id)
    order = rng.permutation(len(classes))
    return np.array(classes)[order], relabel[np.array(groups)[order]]


def split_of_each_group(groups, splits) -> dict:
    by_group = {}
    for group, split in zip(np.asarray(groups).tolist(), splits.tolist()):
        by_group.setdefault(group, set()).add(split)
    return by_group


@pytest.mark.parametrize("seed", range(8))
def test_assign_splits_balances_classes_and_duplicates_for_every_seed(seed):
    make_data = load_make_data()
    classes, groups = synthetic_population()
    splits = make_data.assign_splits(classes, groups, make_data.SPLIT_FRACTIONS, seed)
    by_group = split_of_each_group(groups, splits)
    assert all(len(s) == 1 for s in by_group.values())
    mixed = {g for g in by_group if len(set(classes[groups == g])) > 1}
    assert len(mixed) == 2
    assert {g for g, s in by_group.items() if s == {data.EXCLUDED}} == mixed
    shares = split_shares(classes, groups, splits)
    for split in ("train", "val", "test"):
        for cls in data.BUSI_CLASSES:
            assert abs(shares[split][cls] - shares["whole"][cls]) < 0.04, (split, cls)
        assert abs(shares[split]["duplicates"] - shares["whole"]["duplicates"]) < 0.04, split


def test_assign_splits_meets_each_stream_target_within_one_group():
    make_data = load_make_data()
    classes, groups = synthetic_population()
    fractions = make_data.SPLIT_FRACTIONS
    splits = make_data.assign_splits(classes, groups, fractions, seed=3)
    ids, sizes = np.unique(groups, return_counts=True)
    size = dict(zip(ids.tolist(), sizes.tolist()))
    image_size = np.array([size[g] for g in groups.tolist()])
    kept = splits != data.EXCLUDED
    for cls in data.BUSI_CLASSES:
        for in_stream, largest in ((image_size == 1, 1), (image_size > 1, 7)):
            stream = kept & in_stream & (classes == cls)
            for split, fraction in fractions.items():
                dealt = int((stream & (splits == split)).sum())
                assert abs(dealt - fraction * stream.sum()) <= largest, (cls, largest, split)


def test_deal_hits_integer_targets_exactly():
    make_data = load_make_data()
    singles = list(range(20))
    dealt = make_data.deal(singles, dict.fromkeys(singles, 1), make_data.SPLIT_FRACTIONS)
    counts = {s: list(dealt.values()).count(s) for s in make_data.SPLIT_FRACTIONS}
    assert counts == {"train": 14, "val": 3, "test": 3}


def test_assign_splits_is_deterministic_and_depends_on_the_seed_only():
    make_data = load_make_data()
    classes, groups = synthetic_population()
    fractions = make_data.SPLIT_FRACTIONS
    first = make_data.assign_splits(classes, groups, fractions, seed=5)
    assert first.tolist() == make_data.assign_splits(classes, groups, fractions, 5).tolist()
    # The order of the images does not matter, only the groups and the seed.
    order = np.random.default_rng(9).permutation(len(classes))
    again = make_data.assign_splits(classes[order], groups[order], fractions, seed=5)
    assert split_of_each_group(groups[order], again) == split_of_each_group(groups, first)
    other = make_data.assign_splits(classes, groups, fractions, seed=6)
    moved = (first != other).mean()
    assert 0.1 < moved < 0.9


@pytest.mark.parametrize("fractions", [{"train": 0.7, "val": 0.2, "test": 0.2},
                                       {"train": 1.0, "val": 0.0, "test": 0.0}, {}])
def test_assign_splits_rejects_bad_fractions(fractions):
    make_data = load_make_data()
    with pytest.raises(ValueError, match="fractions must .* sum to 1"):
        make_data.assign_splits(["benign"], [0], fractions, seed=0)


def test_assign_splits_rejects_unknown_classes_and_mismatched_lengths():
    make_data = load_make_data()
    fractions = make_data.SPLIT_FRACTIONS
    with pytest.raises(ValueError, match="'Benign'"):
        make_data.assign_splits(["benign", "Benign"], [0, 1], fractions, seed=0)
    with pytest.raises(ValueError, match="one entry per image"):
        make_data.assign_splits(["benign", "benign"], [0], fractions, seed=0)
