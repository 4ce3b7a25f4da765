"""Smoke test of the benchmark scripts (`make bench` is slow and not a test): each runs end to end
in --quick mode on a tiny BERT, so an API change in the engine or methods cannot break them
unnoticed. Speed figures at these sizes mean nothing; only the correctness checks are asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import tiny_bert_folder

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("bench") / "bert", resolve("minilm"), seed=2)


def _run(script: str, folder: Path, out: Path, *extra: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--model", str(folder),
                        "--out", str(out), *extra], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_w1_quick_runs_and_agrees_with_torch(folder, tmp_path):
    _run("run.py", folder, tmp_path, "--skip-memory")
    w1 = json.loads((tmp_path / "w1.json").read_text())
    assert w1["mode"] == "quick" and w1["checks"]["segments_equal_run_apex_counts"] is True
    assert w1["profile"]["buckets"]  # the kernel replica ran for every length bucket


def test_w2_quick_runs_and_agrees_with_torch(folder, tmp_path):
    _run("w2.py", folder, tmp_path, "--skip-memory")
    w2 = json.loads((tmp_path / "w2.json").read_text())
    a = w2["agreement"]
    assert a["clean_predictions_ours_vs_torch"] == 1.0
    assert a["ours_vs_torch_best"]["fraction_among_margin_at_least_1e-3"] == 1.0  # same silenced predictions


def test_escape_quick_runs(folder, tmp_path):
    _run("escape.py", folder, tmp_path)
    e = json.loads((tmp_path / "escape-quick.json").read_text())
    # the adaptive search agrees with our own fine grid (same noise, same model) within one grid step
    assert e["agreement_with_our_fine_grid_subset"]["plain"]["agree_within_one_grid_step"] == 1.0


def test_real_size_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_size.py"), "--quick", "--out", str(tmp_path),
                        "--cache", str(tmp_path / "models")], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "real_size-quick.json").read_text())
    assert sorted(res["models"]) == ["gpt2-quick", "quick"]  # a BERT encoder and a GPT-2 decoder
    for size, m in res["models"].items():
        assert m["w1"]["ours_fps"] > 0 and m["w1"]["torch_best_fps"] > 0 and m["w1"]["flops"] > 0, size
        assert m["w1"]["clean_agreement_with_torch"] == 1.0, size  # same weights on both sides
        # the same neurons silenced at the same token: [CLS] for BERT, the last real token for GPT-2
        assert m["w2"]["prediction_agreement_with_torch_where_margin_ge_1e-3"] == 1.0, size
    assert res["models"]["gpt2-quick"]["arch"] == "gpt2"


def test_accelerator_smoke_runs_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--smoke", "--out", str(tmp_path),
                        "--models", "bert-base"], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "accelerator-smoke.json").read_text())
    w1 = res["models"]["bert-base"]["w1"]
    assert w1["forwards_per_second"] > 0 and 0 < w1["mfu"] and res["peak_flops"] > 0
