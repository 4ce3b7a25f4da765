"""Sweep engine invariances: chunking, order, compile count, SIGKILL + resume — for the class
counts and, bitwise too, the margin and KL sums (device and process counts:
test_engine_processes.py, a 4-device mesh of two processes; model-parallel meshes:
test_engine_mesh.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax.engine import run_sweep
from apex_jax.errors import InputError
from apex_jax.interventions import Add, Noise
from apex_jax.models.loading import resolve
from tests.helpers.sweep_script import TEXTS, load_scores
from tests.helpers.tiny_text import tiny_bert_folder

SCRIPT = Path(__file__).parent / "helpers" / "sweep_script.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("engine") / "bert", resolve("minilm"), seed=1)


@pytest.fixture(scope="module")
def model(folder):
    return apex_jax.load(folder)


def _sweep(model, texts, ids, **kw):
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]
    sigmas = np.array([0.1, 0.5, 1.0, 2.0, 4.0], np.float32)
    return run_sweep(model, model.params, model.encode(texts), ids,
                     lambda s, k: {site: Noise(k, s, relative=True) for site in sites}, sigmas,
                     sites=sites, draws=16, seed=7, draws_per_step=4, inputs_per_step=4,
                     progress=False, **kw)


def _assert_same(a, counts, margin, kl):
    """Sweep result `a` equals (counts, margin sums, KL sums) bit for bit."""
    np.testing.assert_array_equal(a.counts, counts)
    np.testing.assert_array_equal(a.margin_sum, margin)
    np.testing.assert_array_equal(a.kl_sum, kl)


def _script(folder, out, *extra, env=None):
    return [sys.executable, str(SCRIPT), str(folder), str(out), *extra]


def test_chunking_and_order_do_not_change_counts_and_one_compile(model):
    ids = np.arange(100, 100 + len(TEXTS))
    base = _sweep(model, TEXTS, ids, units_per_call=1)
    assert base.counts.sum() == len(TEXTS) * 5 * 16
    # every chunk of a length bucket reuses one compiled kernel: one compile per bucket
    assert base.settings["compiles"] == len({b.length for b in base.plan.blocks}) == 2
    assert 0 < base.kept.mean() < 1  # some draws flip, some keep
    assert (base.kl_sum > 0).all() and np.isfinite(base.margin_sum).all()
    for upc in (3, 7):
        _assert_same(_sweep(model, TEXTS, ids, units_per_call=upc), base.counts, base.margin_sum, base.kl_sum)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    permuted = _sweep(model, [TEXTS[i] for i in perm], ids[perm], units_per_call=2)
    _assert_same(permuted, base.counts[perm], base.margin_sum[perm], base.kl_sum[perm])
    np.testing.assert_array_equal(base.clean[perm], permuted.clean)


def test_sigkill_then_rerun_finishes_identically(folder, model, tmp_path):
    straight = _sweep(model, TEXTS, np.arange(100, 100 + len(TEXTS)))
    run_dir, out = tmp_path / "run", tmp_path / "resumed.npy"
    cmd = _script(folder, out, "--run-dir", str(run_dir), "--units-per-call", "1", "--draws", "16")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = run_dir / "sweep-checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        steps = [p for p in ckpts.glob("*/*") if p.name.isdigit()] if ckpts.exists() else []
        if steps and int(max(p.name for p in steps)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _assert_same(straight, np.load(out), *load_scores(out))  # resumed score sums continue exactly


def test_bad_sweeps_are_rejected(model):
    with pytest.raises(ValueError, match="unique"):
        _sweep(model, TEXTS[:2], [1, 1])
    with pytest.raises(ValueError, match="no inputs"):
        run_sweep(model, model.params, {"input_ids": np.zeros((0, 4), np.int32),
                                        "attention_mask": np.zeros((0, 4), np.int32)}, [],
                  lambda s, k: {}, np.ones(2), sites=["hook_embed"], draws=2)


def _noise_on_blocks(point, keys):  # one function object: the kernel cache key needs it
    return {f"blocks.{i}.hook_resid_post": Noise(keys, point, relative=True) for i in range(2)}


def test_checkpoints_of_one_architecture_share_kernels_but_use_their_own_params(model):
    """A second checkpoint of the same architecture (here: the classifier negated, so its
    predictions differ) reuses the compiled kernel, and the sweep runs with ITS parameters:
    clean predictions = its own forward, not the first model's."""
    import jax

    params2 = jax.tree.map(lambda x: x, model.params)
    params2["head"]["classifier"]["kernel"] = -params2["head"]["classifier"]["kernel"]
    other = model.replace(params2)
    assert other is not model and other.skeleton is model.skeleton
    batch = model.encode(TEXTS[:4])
    ids = np.arange(4)
    sigmas = np.array([0.1, 2.0], np.float32)
    kw = dict(sites=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], draws=4, seed=3, progress=False)
    first = run_sweep(model, model.params, batch, ids, _noise_on_blocks, sigmas, **kw)
    second = run_sweep(other, other.params, batch, ids, _noise_on_blocks, sigmas, **kw)
    assert second.settings["compiles"] == 0  # the first sweep's kernel was not traced again
    own = np.asarray(other.forward(batch).logits).argmax(1)
    np.testing.assert_array_equal(second.clean, own)
    assert (second.clean != first.clean).any()  # the negated head really predicts differently


def _add_on_embed(point, keys):  # one function object: the kernel cache key needs it
    return {"hook_embed": Add(point)}


def test_nonfinite_draws_count_in_no_class(model):
    """A perturbation that makes the logits NaN is counted as non-finite, never as class 0:
    such draws keep nothing, predict no class and are left out of the margin and KL means."""
    batch, ids = model.encode(TEXTS[:3]), np.arange(3)
    r = run_sweep(model, model.params, batch, ids, _add_on_embed, np.array([0.0, np.nan], np.float32),
                  sites=["hook_embed"], draws=4, seed=0, progress=False)
    np.testing.assert_array_equal(r.finite_draws, [[4, 0]] * 3)
    np.testing.assert_array_equal(r.nonfinite, [[0.0, 1.0]] * 3)
    np.testing.assert_array_equal(r.kept, [[1.0, 0.0]] * 3)
    assert np.isfinite(r.mean_margin[:, 0]).all() and np.isnan(r.mean_margin[:, 1]).all()
    assert np.isnan(r.mean_kl[:, 1]).all() and (r.counts[:, 1] == 0).all()


def test_a_model_with_nonfinite_clean_logits_is_an_error(model):
    params = jax.tree.map(lambda x: x, model.params)
    params["head"]["classifier"]["kernel"] = np.full_like(params["head"]["classifier"]["kernel"], np.nan)
    with pytest.raises(InputError, match=r"clean logits are not finite.*ids \[[01]"):
        run_sweep(model, params, model.encode(TEXTS[:2]), [0, 1], _noise_on_blocks, np.array([0.1], np.float32),
                  sites=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], draws=2, progress=False)
    with pytest.raises(InputError, match=r"2 ids for 3 inputs"):
        run_sweep(model, model.params, model.encode(TEXTS[:3]), [0, 1], _noise_on_blocks,
                  np.array([0.1], np.float32), sites=["blocks.0.hook_resid_post"], draws=2, progress=False)
    with pytest.raises(InputError, match=r"ids must lie in \[0, 4294967295\]"):
        run_sweep(model, model.params, model.encode(TEXTS[:2]), [0, 2**32], _noise_on_blocks,
                  np.array([0.1], np.float32), sites=["blocks.0.hook_resid_post"], draws=2, progress=False)
