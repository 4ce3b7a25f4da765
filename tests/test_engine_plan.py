"""Engine: one compile across seeds/K/σ/inputs, the inspectable plan, checkpoint fingerprints
that cover the parameters, finished-run records, the forward counter, corrupt checkpoints."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax.checkpoints import CheckpointError, Checkpoints
from apex_jax.engine import (SweepPlan, checkpoints_in, differences, draw_keys,
                             enable_compile_cache, plan_sweep, run_sweep)
from apex_jax.engine import kernels
from apex_jax.interventions import Noise
from apex_jax.models.loading import resolve
from tests.helpers.sweep_script import TEXTS
from tests.helpers.tiny_text import tiny_bert_folder

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def _noise(point, keys):  # module-level: one function object, so one compile key
    return {s: Noise(keys, point, relative=True) for s in SITES}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return apex_jax.load(tiny_bert_folder(tmp_path_factory.mktemp("plan") / "bert", resolve("minilm"), seed=1))


def _negated(model):
    params = jax.tree.map(lambda x: x, model.params)
    params["head"]["classifier"]["kernel"] = -params["head"]["classifier"]["kernel"]
    params["head"]["classifier"]["bias"] = -params["head"]["classifier"]["bias"]
    return params


def test_draw_keys_equal_for_traced_and_python_seeds():
    ids, draws = np.arange(3), np.arange(4)
    for seed in (0, 7, 2**31 - 1):
        want = jax.random.key_data(draw_keys(seed, ids, 2, draws))
        traced = jax.jit(lambda s: jax.random.key_data(draw_keys(s, ids, 2, draws)))(np.uint32(seed))
        rooted = jax.random.key_data(draw_keys(jax.random.key(seed), ids, 2, draws))
        np.testing.assert_array_equal(want, traced)
        np.testing.assert_array_equal(want, rooted)


def test_one_trace_across_seeds_k_sigmas_and_inputs(model):
    """Seed, K, σ values and inputs of one length bucket are arrays of one compiled kernel."""
    before = dict(kernels.TRACES)
    kw = dict(sites=SITES, draws_per_step=4, inputs_per_step=4, progress=False, pad_multiple=16)
    a = run_sweep(model, model.params, model.encode(TEXTS[:4]), np.arange(4), _noise,
                  np.array([0.1, 1.0], np.float32), draws=8, seed=1, **kw)
    b = run_sweep(model, _negated(model), model.encode(TEXTS[4:]), np.arange(10, 14), _noise,
                  np.array([0.3, 3.0], np.float32), draws=12, seed=2, common_noise=False, **kw)
    assert a.plan.blocks[0].length == b.plan.blocks[0].length == 16  # the same bucket
    assert kernels.TRACES["chunk"] - before.get("chunk", 0) == 1
    assert kernels.TRACES["prefix"] - before.get("prefix", 0) <= 1
    assert (a.settings["compiles"], b.settings["compiles"]) == (1, 0)
    assert b.counts.sum() == 4 * 2 * 12
    # Model.jitted: one compile for every model of the architecture
    from apex_jax.models.model import jit_apply

    other, batch = model.replace(_negated(model)), model.encode(TEXTS[:3])
    model.jitted()(model.params, batch)
    size = jit_apply._cache_size()
    np.testing.assert_array_equal(np.asarray(other.forward(batch).logits),
                                  -np.asarray(model.forward(batch).logits))
    assert jit_apply._cache_size() == size


def _zero_sites(sites):
    """A perturbation zeroing every site of `sites` scaled by the grid point."""
    from apex_jax.interventions import Scale

    def perturb(point, keys):
        return {s: Scale(point) for s in sites}
    return perturb


def test_prefix_shared_by_site_sets_with_one_first_block(model):
    """The cached prefix depends only on the first block a sweep perturbs: site sets that start
    at the same block (block 0's output, with or without block 1's) compile it once, and the
    clean logits are those of the model."""
    batch = model.encode(TEXTS[:3])
    kw = dict(draws=1, inputs_per_step=4, progress=False, pad_multiple=16)
    grid = np.array([1.0], np.float32)
    before = kernels.TRACES["prefix"]
    a = run_sweep(model, model.params, batch, np.arange(3), _zero_sites(SITES[:1]), grid, sites=SITES[:1], **kw)
    mid = kernels.TRACES["prefix"]
    b = run_sweep(model, model.params, batch, np.arange(3), _zero_sites(SITES), grid, sites=SITES, **kw)
    assert mid - before <= 1 and kernels.TRACES["prefix"] == mid  # the second site set reuses it
    clean = np.asarray(model.forward(batch).logits)
    np.testing.assert_allclose(a.clean_logits, clean, atol=1e-5)
    np.testing.assert_array_equal(a.clean_logits, b.clean_logits)
    # scale 1 is the identity: every input keeps its clean prediction at both site sets
    np.testing.assert_array_equal(a.counts[:, 0].argmax(-1), clean.argmax(-1))
    np.testing.assert_array_equal(b.counts[:, 0].argmax(-1), clean.argmax(-1))


def test_plan_is_attached_and_describes_the_schedule(model):
    batch = model.encode(TEXTS)
    plan = plan_sweep(model, batch, grid_size=5, draws=6, sites=SITES, draws_per_step=4,
                      inputs_per_step=2, grid_per_step=2)
    assert isinstance(plan, SweepPlan)
    assert (plan.n_draw_blocks, plan.n_grid_blocks) == (2, 3)
    assert plan.units == len(plan.blocks) * 6 and plan.rows_per_step == 16
    lengths = batch["attention_mask"].sum(1)
    assert plan.real_tokens == 5 * 6 * lengths.sum()
    assert plan.padded_tokens >= plan.real_tokens and plan.flops > 0 and plan.peak_activation_bytes > 0
    assert plan.start_block == 1 and plan.head_only  # block 0 output = the cached prefix
    json.dumps(plan.summary())
    res = run_sweep(model, model.params, batch, np.arange(len(TEXTS)), _noise,
                    np.linspace(0.1, 2, 5).astype(np.float32), sites=SITES, draws=6, draws_per_step=4,
                    inputs_per_step=2, grid_per_step=2, progress=False)
    assert res.plan.summary() == plan.summary()


def test_forward_counter_is_a_python_int_for_k_not_a_multiple_of_the_step(model):
    res = run_sweep(model, model.params, model.encode(TEXTS[:3]), np.arange(3), _noise,
                    np.array([0.1, 1.0], np.float32), sites=SITES, draws=3, draws_per_step=2,
                    progress=False)
    assert json.loads(json.dumps(res.perturbed_forwards)) == 3 * 2 * 3
    assert type(res.perturbed_forwards) is int


def test_checkpoint_of_another_model_is_not_resumed(model, tmp_path):
    """Same run_dir, same settings, other weights: the result is the other model's own."""
    batch, ids = model.encode(TEXTS[:4]), np.arange(4)
    sig = np.array([0.1, 2.0], np.float32)
    kw = dict(sites=SITES, draws=8, seed=3, progress=False)
    first = run_sweep(model, model.params, batch, ids, _noise, sig, run_dir=tmp_path, **kw)
    negated = _negated(model)
    second = run_sweep(model, negated, batch, ids, _noise, sig, run_dir=tmp_path, **kw)
    fresh = run_sweep(model, negated, batch, ids, _noise, sig, **kw)
    np.testing.assert_array_equal(second.counts, fresh.counts)
    assert not np.array_equal(first.counts, second.counts)
    assert second.perturbed_forwards == 4 * 2 * 8
    # both sweeps are listed, complete, and what differs between them is named
    found = {c.fingerprint: c for c in checkpoints_in(tmp_path)}
    assert set(found) == {first.fingerprint, second.fingerprint} and all(c.complete for c in found.values())
    diff = differences(found[first.fingerprint].settings, found[second.fingerprint].settings)
    assert list(diff) == ["params_sha256"]


def test_checkpoint_under_other_numerics_is_not_resumed(model, tmp_path, monkeypatch):
    """A sweep under numerics-changing XLA flags (here the opt-in oneDNN path) gets its own
    fingerprint, naming what differs; neutral flags (device count, dumps) keep the default one."""
    from apex_jax.engine.store import numerics

    assert numerics({"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_dump_to=/tmp/x"}) == {}
    batch, ids = model.encode(TEXTS[:2]), np.arange(2)
    kw = dict(sites=SITES, draws=4, seed=3, progress=False, run_dir=tmp_path)
    sig = np.array([0.5], np.float32)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    default = run_sweep(model, model.params, batch, ids, _noise, sig, **kw)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=true --xla_force_host_platform_device_count=1")
    onednn = run_sweep(model, model.params, batch, ids, _noise, sig, **kw)
    assert default.fingerprint != onednn.fingerprint and onednn.perturbed_forwards == 2 * 4
    found = {c.fingerprint: c.settings for c in checkpoints_in(tmp_path)}
    assert differences(found[default.fingerprint], found[onednn.fingerprint]) == {
        "numerics": (None, {"xla_flags": ["--xla_cpu_use_onednn=true"]})}


def test_finished_sweep_reruns_without_computing(model, tmp_path):
    batch, ids = model.encode(TEXTS[:2]), np.arange(2)
    kw = dict(sites=SITES, draws=4, seed=5, progress=False, run_dir=tmp_path)
    first = run_sweep(model, model.params, batch, ids, _noise, np.array([0.5], np.float32), **kw)
    again = run_sweep(model, model.params, batch, ids, _noise, np.array([0.5], np.float32), **kw)
    assert again.perturbed_forwards == 0 and first.perturbed_forwards == 2 * 4
    np.testing.assert_array_equal(first.counts, again.counts)
    assert (first.kl_sum > 0).all()  # the restored score sums are the computed ones
    np.testing.assert_array_equal(first.margin_sum, again.margin_sum)
    np.testing.assert_array_equal(first.kl_sum, again.kl_sum)
    (info,) = checkpoints_in(tmp_path)
    assert info.complete and info.settings["draws"] == 4 and info.settings["seed"] == 5


def test_corrupt_sweep_checkpoint_names_its_folder(model, tmp_path):
    batch, ids = model.encode(TEXTS[:2]), np.arange(2)
    kw = dict(sites=SITES, draws=4, seed=5, progress=False, run_dir=tmp_path)
    run_sweep(model, model.params, batch, ids, _noise, np.array([0.5], np.float32), **kw)
    (info,) = checkpoints_in(tmp_path)
    for step in (p for p in info.folder.iterdir() if p.name.isdigit()):
        shutil.rmtree(step / "state")
    with pytest.raises(CheckpointError, match=str(info.folder)):
        run_sweep(model, model.params, batch, ids, _noise, np.array([0.5], np.float32), **kw)


def test_checkpoints_round_trip_and_reject_other_shapes(tmp_path):
    store = Checkpoints(tmp_path / "ck")
    state = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.ones(3, bool)}
    store.save(1, state, {"note": "x"})
    got, meta = Checkpoints(tmp_path / "ck").restore(state)
    np.testing.assert_array_equal(got["a"], state["a"]) and np.testing.assert_array_equal(got["b"], state["b"])
    assert meta == {"note": "x"}
    with pytest.raises(CheckpointError, match="Delete that folder"):
        store.restore({"a": np.zeros((4, 4), np.int64), "b": np.ones(3, bool)})


def test_memory_map_guard_clears_compiled_executables_near_the_limit(monkeypatch):
    """Compiled executables hold memory maps until JAX's caches drop them; the guard clears the
    caches (with a warning) only past its fraction of the limit."""
    from apex_jax.engine import memory_maps as mm

    used, limit = mm.memory_maps()
    assert 0 < used <= limit
    g = jax.jit(lambda a, i: a * i, static_argnums=1)
    for i in range(40):  # 40 executables: ~3 maps each on XLA:CPU
        g(np.ones(3, np.float32), i).block_until_ready()
    grown = mm.memory_maps()[0]
    assert grown > used + 40 and g._cache_size() == 40
    assert not mm.release_if_near_limit(fraction=1.0) and g._cache_size() == 40
    held = iter([(95, 100), (90, 100), (94, 100), (96, 100), (85, 100)])  # before/after each clear
    monkeypatch.setattr(mm, "memory_maps", lambda: next(held))
    monkeypatch.setattr(mm, "_after_last_clear", None)
    with pytest.warns(RuntimeWarning, match="held 95 of its 100 memory maps.*freed 5 maps"):
        assert mm.release_if_near_limit()
    assert g._cache_size() == 0
    assert not mm.release_if_near_limit()  # 94: held elsewhere; half the room left (95) not used yet
    with pytest.warns(RuntimeWarning, match="held 96"):
        assert mm.release_if_near_limit()
    monkeypatch.undo()
    assert mm.memory_maps()[0] < grown - 40


def test_enable_compile_cache_sets_jax_config(tmp_path):
    # in a subprocess: once JAX has seen the cache on, it keeps writing every later compile of
    # this process there, and the rest of the suite runs without the persistent cache
    import subprocess
    import sys

    code = ("import jax, sys; from apex_jax.engine import enable_compile_cache\n"
            "folder = enable_compile_cache(sys.argv[1])\n"
            "assert folder.is_dir() and jax.config.jax_compilation_cache_dir == str(folder)\n"
            "assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5\n"
            "jax.jit(lambda x: x + 1)(1.0).block_until_ready()\n"
            "print(len(list(folder.iterdir())))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cc")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_processes_with_other_xla_flags_refuse_to_sweep_together(tmp_path):
    """One process of a 2-process sweep started with a numerics-changing XLA flag: both stop
    with a message naming the cause instead of gathering counts of two numerics. Likewise
    processes describing different sweeps (here other draw counts) under one run folder."""
    import os
    import socket
    import subprocess

    from tests.test_engine import _script

    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"), seed=1)

    def launch(flags, draws):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        procs = [subprocess.Popen(_script(folder, tmp_path / f"p{i}.npy", "--run-dir", str(tmp_path / "run"),
                                          "--draws", str(draws[i]), "--coordinator", f"127.0.0.1:{port}",
                                          "--process-id", str(i), "--num-processes", "2"),
                                  env={**os.environ, "XLA_FLAGS": flags[i]}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode != 0 for p in procs) and not any((tmp_path / f"p{i}.npy").exists() for i in range(2))
        return errs

    errs = launch(["", "--xla_cpu_use_onednn=true"], [8, 8])
    assert all("differ in their numerics" in e and "XLA_FLAGS" in e for e in errs), errs[0][-2000:]
    assert "--xla_cpu_use_onednn=true" in errs[1] and "1 of 2 processes agree" in errs[0]
    errs = launch(["", ""], [8, 16])
    assert all("differ in their checkpoint fingerprint" in e and "settings.json" in e for e in errs), errs[0][-2000:]


def test_length_buckets_follow_each_inputs_own_length(model):
    """Default buckets are multiples of 8; 16 is the old rule, 1 exact lengths; a bucket
    depends only on the input's own length."""
    from apex_jax.engine.plan import PAD_MULTIPLE, bucket_length

    assert PAD_MULTIPLE == 8
    assert list(bucket_length(np.array([0, 1, 8, 9, 33]))) == [8, 8, 8, 16, 40]
    assert list(bucket_length(np.array([1, 17, 33]), 16)) == [16, 32, 48]
    assert list(bucket_length(np.array([3, 33]), 1)) == [3, 33]
    batch = model.encode(TEXTS)
    lengths = batch["attention_mask"].sum(1)
    for m in (1, 8, 16):
        plan = plan_sweep(model, batch, grid_size=2, draws=4, sites=SITES, pad_multiple=m)
        assert plan.pad_multiple == m
        for b in plan.blocks:
            assert all(b.length == bucket_length(lengths[r], m) for r in b.rows if r >= 0)
    with pytest.raises(ValueError, match="pad_multiple"):
        plan_sweep(model, batch, grid_size=2, draws=4, sites=SITES, pad_multiple=0)


def test_memory_budget_comes_from_the_device_when_it_reports_memory(model, monkeypatch):
    from apex_jax.engine import plan as plan_mod

    dev = jax.local_devices()[0]
    batch = model.encode(TEXTS[:2])
    cpu = plan_sweep(model, batch, grid_size=64, draws=256, sites=SITES)
    assert cpu.memory_budget == plan_mod.DEFAULT_MEMORY_BUDGET  # CPU: no memory stats
    per_row = plan_mod.activation_bytes_per_row(model.config, max(b.length for b in cpu.blocks))

    class Dev:  # a device reporting 64 rows' worth of free memory (fraction 0.5)
        process_index = dev.process_index

        def memory_stats(self):
            return {"bytes_limit": 200 * per_row, "bytes_in_use": 72 * per_row}

    budget = plan_mod.device_memory_budget(Dev())
    assert budget == plan_mod.DEVICE_MEMORY_FRACTION * 128 * per_row
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Dev()])
    small = plan_sweep(model, batch, grid_size=64, draws=256, sites=SITES)
    assert small.memory_budget == budget
    assert small.rows_per_step * per_row <= budget < 2 * small.rows_per_step * per_row
    assert small.rows_per_step < cpu.rows_per_step
    # an explicit budget wins over the device's
    assert plan_sweep(model, batch, grid_size=64, draws=256, sites=SITES,
                      memory_budget=2**30).memory_budget == 2**30
