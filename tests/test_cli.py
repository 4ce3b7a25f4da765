"""The apex-jax command: finetune -> saved HF folder -> noise probe, and its error path."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from apex_jax import cli  # noqa: E402
from apex_jax.models.loading import resolve  # noqa: E402
from tiny_text import sentiment_csv, tiny_bert_folder  # noqa: E402


def test_finetune_then_noise(tmp_path, capsys):
    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"))
    task = sentiment_csv(tmp_path / "task.csv", 60)
    run = tmp_path / "run"
    assert cli.main(["finetune", str(folder), "--data", str(task), "--out", str(run), "--epochs", "1",
                     "--batch-size", "8"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 60
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert "held-out test accuracy" in capsys.readouterr().out

    probe = tmp_path / "probe"
    argv = ["apex", str(run / "model"), "--data", str(task), "--out", str(probe), "--n", "5",
            "--draws", "4", "--sigmas", "0,2", "--quiet"]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader(open(probe / "samples.csv")))
    assert len(rows) == 5
    assert all(float(r["kept_sigma_0"]) == 1.0 for r in rows)
    summary = json.loads((probe / "summary.json").read_text())
    assert json.loads((probe / "timing.json").read_text())["perturbed_forwards"] == 5 * 2 * 4
    np.testing.assert_allclose(summary["results"]["mean_consistency"][1],
                               np.mean([float(r["kept_sigma_2"]) for r in rows]), rtol=1e-5)
    for png in ("consistency_curves", "escape_sigma_hist", "transitions", "large_sigma_shares"):
        assert (probe / f"{png}.png").stat().st_size > 1000
    first = (probe / "summary.json").read_bytes(), (probe / "samples.csv").read_bytes()
    assert cli.main(argv) == 0  # rerun: identical files (resumed from the finished checkpoint)
    assert ((probe / "summary.json").read_bytes(), (probe / "samples.csv").read_bytes()) == first


def test_sites_lists_every_site(capsys):
    assert cli.main(["sites", "minilm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "hook_embed" in lines and "blocks.5.mlp.hook_post" in lines
    assert len(lines) == 1 + 1 + 6 * 12  # header, hook_embed, 12 sites per block, no head


def test_bad_data_name_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["finetune", "minilm", "--data", "no-such-set", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-set" in err and "vader-movies" in err
