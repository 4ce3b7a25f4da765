"""Model-parallel sweeps: the (units, model) mesh, the tensor-parallel parameter split, counts
against one device away from near-ties, and the micro-batch per device's share (resuming a
multi-process sweep with another process count: test_engine_processes.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import apex_jax
from apex_jax.engine import plan as plan_mod
from apex_jax.engine import run_sweep
from apex_jax.engine.mesh import param_specs, sweep_mesh, unsplit_leaves
from apex_jax.errors import InputError
from apex_jax.interventions import Noise
from tests.helpers.mesh_script import CONFIGS, inputs

MESH_SCRIPT = Path(__file__).parent / "helpers" / "mesh_script.py"
# float32 logits of O(1) on the 2 x 2 mesh vs one device: the split reductions change summation
# order only (observed <= 8e-7 on both tiny models)
LOGIT_TOL = 1e-5
NEAR_TIE = 100  # a draw is a near-tie when its top-two logit margin < NEAR_TIE x the observed difference


def _spec(specs, *path):
    for k in path:
        specs = specs[k]
    return specs


def test_param_specs_split_attention_mlp_and_embeddings():
    bert = apex_jax.create(CONFIGS["bert"], num_labels=3)
    s = param_specs(bert.params, 2)
    for name in ("q", "k", "v"):
        assert _spec(s, "blocks_0", "attn", name, "kernel") == P(None, "model")  # output features
        assert _spec(s, "blocks_0", "attn", name, "bias") == P("model")
    assert _spec(s, "blocks_1", "attn", "o", "kernel") == P("model", None)  # input features
    assert _spec(s, "blocks_1", "attn", "o", "bias") == P()  # added after the reduction
    assert _spec(s, "blocks_0", "mlp", "fc_in", "kernel") == P(None, "model")
    assert _spec(s, "blocks_0", "mlp", "fc_out", "kernel") == P("model", None)
    assert _spec(s, "embed", "word", "embedding") == P("model", None)
    for path in (("blocks_0", "ln_attn", "scale"), ("head", "classifier", "kernel"), ("head", "pooler", "kernel")):
        assert _spec(s, *path) == P()
    gpt = apex_jax.create(dict(model_type="gpt2", vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=32),
                          num_labels=3)
    g = param_specs(gpt.params, 2)
    assert _spec(g, "blocks_0", "attn", "qkv", "kernel") == P(None, "model")
    assert _spec(g, "embed", "embedding") == P("model", None)
    llama = param_specs(apex_jax.create(CONFIGS["llama"], num_labels=3).params, 2)
    assert _spec(llama, "blocks_0", "mlp", "gate", "kernel") == _spec(llama, "blocks_0", "mlp", "up", "kernel") \
        == P(None, "model")
    # a stacked leaf [layers, d_in, d_out] keeps its layer axis whole
    stacked = {"blocks": {"attn": {"q": {"kernel": np.zeros((2, 16, 16))}, "o": {"kernel": np.zeros((2, 16, 16))}}}}
    st = param_specs(stacked, 4)
    assert st["blocks"]["attn"]["q"]["kernel"] == P(None, None, "model")
    assert st["blocks"]["attn"]["o"]["kernel"] == P(None, "model", None)
    # an axis the model axis does not divide stays whole, and is named
    assert _spec(param_specs(bert.params, 3), "blocks_0", "attn", "q", "kernel") == P()
    assert "['blocks_0']['attn']['q']['kernel']" in unsplit_leaves(bert.params, 3)
    assert unsplit_leaves(bert.params, 2) == []


def test_bad_meshes_are_refused():
    n = jax.device_count()
    with pytest.raises(InputError, match=rf"model_parallel={n + 1} does not divide the {n} devices"):
        sweep_mesh(n + 1)
    with pytest.raises(InputError, match="positive integer"):
        sweep_mesh(0)
    m = apex_jax.create(CONFIGS["bert"], num_labels=3)
    sites = ["blocks.1.hook_resid_post"]
    args = (m, m.params, inputs(2), [0, 1], lambda s, k: {sites[0]: Noise(k, s)}, np.ones(1, np.float32))
    with pytest.raises(InputError, match="model_parallel=2 disagrees with the mesh's model axis of 1"):
        run_sweep(*args, sites=sites, draws=2, mesh=sweep_mesh(1), model_parallel=2, progress=False)
    bad = jax.make_mesh((n,), ("draws",))
    with pytest.raises(InputError, match="needs axes"):
        run_sweep(*args, sites=sites, draws=2, mesh=bad, progress=False)


def test_two_by_two_mesh_matches_one_device_away_from_near_ties(tmp_path):
    """On 4 forced CPU devices: a (2 units x 2 model) sweep of a tiny BERT and a tiny Llama
    (GQA) against the same sweep on one device. Logits within LOGIT_TOL; every draw whose
    top-two margin exceeds NEAR_TIE x the observed logit difference predicts the same class;
    counts are equal in every (input, σ) cell without such a near-tie draw; each device holds
    exactly half of every split parameter."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    r = subprocess.run([sys.executable, str(MESH_SCRIPT), str(tmp_path), "bert", "llama"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for arch in ("bert", "llama"):
        z = np.load(tmp_path / f"{arch}.npz")
        assert int(z["devices"]) == 4 and json.loads(str(z["plan"]))["model_parallel"] == 2
        one, split = z["logits_one"], z["logits_split"]  # [n, G, K, C]
        diff = float(np.abs(split - one).max())
        assert 0 <= diff <= LOGIT_TOL * max(1.0, float(np.abs(one).max())), (arch, diff)
        # the per-draw logits are the engine's draws: their argmax counts are its counts
        recon = (one.argmax(-1)[..., None] == np.arange(one.shape[-1])).sum(2)
        np.testing.assert_array_equal(recon, z["one"])
        top2 = np.sort(one, -1)
        margin = top2[..., -1] - top2[..., -2]
        clear = margin > NEAR_TIE * max(diff, np.finfo(np.float32).eps)
        assert clear.mean() > 0.9, (arch, clear.mean())  # the comparison is not vacuous
        np.testing.assert_array_equal(one.argmax(-1)[clear], split.argmax(-1)[clear])
        cells = clear.all(-1)  # [n, G]: no near-tie draw
        np.testing.assert_array_equal(z["split"][cells], z["one"][cells])
        assert (z["split"].sum(-1) == z["one"].sum(-1)).all()  # every draw counted once
        c1, c2 = z["clean_logits_one"], z["clean_logits_split"]
        assert np.abs(c1 - c2).max() <= LOGIT_TOL * max(1.0, float(np.abs(c1).max()))
        clean_margin = np.diff(np.sort(c1, -1)[:, -2:], axis=-1)[:, 0]
        sure = clean_margin > NEAR_TIE * max(diff, np.finfo(np.float32).eps)
        np.testing.assert_array_equal(z["clean_one"][sure], z["clean_split"][sure])
        # really sharded: each of the 4 devices holds half of the split leaves' bytes
        np.testing.assert_array_equal(z["held"], np.full(4, int(z["total"]) // 2))
        names = " ".join(str(n) for n in z["split_leaves"])
        for part in ("['attn']['q']['kernel']", "['attn']['k']['kernel']", "['attn']['v']['kernel']",
                     "['attn']['o']['kernel']", "['mlp']['fc_out']['kernel']", "['embedding']"):
            assert part in names, (arch, part)


def test_micro_batch_is_sized_for_each_devices_share_of_the_activations():
    c = apex_jax.create(CONFIGS["bert"], num_labels=3).config
    L, d, dm, h = 16, c.d_model, c.d_mlp, c.n_heads
    one = plan_mod.activation_bytes_per_row(c, L)
    assert one == L * ((8 * d + 2 * dm) * 4 + 2 * h * L * 4)  # unchanged for one device
    two = plan_mod.activation_bytes_per_row(c, L, 2)
    assert two == L * (4 * d * 4 + ((4 * d + 2 * dm) * 4 + 2 * h * L * 4) // 2)
    budget = 100 * one  # 100 rows: 64 per step on one device, 160 -> 128 with half the heads
    assert plan_mod.default_micro_batch(c, L, 1024, budget) == 64
    rows = plan_mod.default_micro_batch(c, L, 1024, budget, 2)
    assert rows == 1 << int(np.log2(budget // two)) and rows == 128  # more rows fit each device


def test_cli_model_parallel_is_checked_before_any_work(tmp_path, capsys):
    from apex_jax.cli import main

    n = jax.device_count()
    for cmd in (["apex", "minilm", "--data", "vader-movies"],
                ["silence", "minilm", "--data", "vader-movies", "--probe", str(tmp_path / "none")]):
        assert main([*cmd, "--out", str(tmp_path / "o"), "--model-parallel", str(n + 1)]) == 2
        assert f"model_parallel={n + 1} does not divide the {n} devices" in capsys.readouterr().err
        assert main([*cmd, "--out", str(tmp_path / "o"), "--model-parallel", "0"]) == 2
        assert "--model-parallel must be a positive integer" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()
