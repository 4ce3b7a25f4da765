"""The benchmarks package: it imports, every entry point answers --help, and the shared harness
measures and records for real on tiny inputs. Seconds, not a benchmark: `make bench` is slow and
not a test, and speed figures at these sizes would mean nothing."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness as h

ROOT = Path(__file__).parent.parent
ENTRY_POINTS = ("w1", "w2", "escape", "real_size", "accelerator", "compile_depth", "bf16_effect")


def test_package_imports_without_path_tricks():
    for name in ENTRY_POINTS:
        assert callable(importlib.import_module(f"benchmarks.{name}").main)
    for path in (ROOT / "benchmarks").glob("*.py"):  # entry points run as `python -m benchmarks.NAME`
        assert "sys.path" not in path.read_text(), path


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_help(name):
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--out" in r.stdout


def test_harness_times_and_writes_a_record(tmp_path):
    import jax
    import jax.numpy as jnp

    events = h.CompileEvents()
    f = jax.jit(lambda x: (x @ x).sum())
    x = jnp.ones((32, 32))
    mark = events.mark()
    t = h.time_call(lambda: f(x), warmup=1, repeats=3)
    assert len(t.warmup_s) == 1 and len(t.wall_s) == 3 and t.median_s > 0 and t.median_cpu_s >= 0
    assert events.since(mark)["seconds"] > 0  # the warm-up compiled f
    peak = h.matmul_peak(64, 2, with_torch=False)
    assert peak["jax_gflops"] > 0 and "torch_gflops" not in peak

    res = {"run": h.run_record("smoke"), "figure": np.float32(1.5), "timing": t}
    path = h.write_json(tmp_path / "out" / "smoke.json", res)
    back = json.loads(path.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the record names its commit and whether it was dirty
        assert back["run"]["git"]["commit"] == head.stdout.strip()
        assert isinstance(back["run"]["git"]["dirty"], bool)
    assert back["run"]["versions"]["jax"] == jax.__version__ and back["run"]["versions"]["python"]
    assert back["run"]["machine"]["cpu_count"] and back["run"]["total_seconds"] >= 0
    assert back["figure"] == 1.5 and len(back["timing"]["wall_s"]) == 3
    assert "commit" in h.describe_run(back["run"])


def test_flops_a_full_suffix_is_a_full_forward():
    from types import SimpleNamespace

    cfg = SimpleNamespace(d_model=64, d_mlp=256, n_layers=4, n_classes=2)
    assert h.suffix_forward(cfg, 16, 0, False) == h.full_forward(cfg, 16)
    assert h.prefix_forward(cfg, 16, 1) + h.suffix_forward(cfg, 16, 1, False) == h.full_forward(cfg, 16)
    assert h.suffix_forward(cfg, 16, 0, True) < h.full_forward(cfg, 16)  # last layer [CLS] only


def test_torch_baselines_clean_when_nothing_is_perturbed(tmp_path):
    pytest.importorskip("torch")
    from apex_jax import load
    from apex_jax.assets import asset_path
    from tests.helpers.tiny_text import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "bert", asset_path("minilm"), seed=2)
    tmodel = h.load_hf(str(folder), threads=1)
    batch = load(str(folder)).encode(["a fine film", "dull and far too long for what it says"], max_length=16)
    clean = h.clean_predictions(tmodel, batch, range(2))
    hooks = h.NoiseHooks(tmodel, [1.0, 1.0])
    _, counts = h.noise_best(tmodel, hooks, batch, [0, 1], [0.0], draws=3, batch_size=2, n_classes=2)
    assert (counts[np.arange(2), 0, clean] == 3).all()  # σ = 0: every draw is the clean prediction
    _, preds = h.noise_reference(tmodel, hooks, batch, [(0, 0.0), (1, 0.0)])
    assert preds == clean.tolist()
    hooks.remove()
    masks = [np.zeros((2, 16), np.float32)] * 2  # silencing no neuron
    _, p, _ = h.silence_best(tmodel, batch, [0, 1], masks, batch_size=2)
    assert (p == clean[:, None, None]).all()
    _, p = h.silence_reference(tmodel, batch, masks, [(0, 1, 0), (1, 0, 1)])
    assert p.tolist() == clean.tolist()
