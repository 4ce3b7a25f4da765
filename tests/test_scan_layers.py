"""The block stack as scans over stacked layers (DESIGN.md, principle 7).

Scanned and unrolled stacks run the same operations per layer; XLA:CPU fuses the unrolled
program across layer boundaries, so the two agree to float32 rounding (not bit for bit), and a
scan's compiled size does not grow with depth."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import apex_jax
from apex_jax.errors import InputError
from apex_jax.interventions import Add, Noise, Scale
from apex_jax.models.common import STACKED, stack_blocks
from apex_jax.models.decoder import Decoder
from apex_jax.models.encoder import Encoder

CFGS = {
    "bert": {"model_type": "bert", "hidden_size": 24, "num_hidden_layers": 4, "num_attention_heads": 3,
             "intermediate_size": 40, "vocab_size": 100, "max_position_embeddings": 64},
    "mistral": {"model_type": "mistral", "hidden_size": 24, "num_hidden_layers": 4, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 40, "vocab_size": 100,
                "max_position_embeddings": 64, "sliding_window": 4},
    "gpt2": {"model_type": "gpt2", "n_embd": 24, "n_layer": 4, "n_head": 3, "vocab_size": 100, "n_positions": 64},
}


def _batch():
    rng = np.random.default_rng(0)
    mask = np.ones((3, 9), np.int32)
    mask[1, 6:] = 0
    return {"input_ids": rng.integers(1, 100, (3, 9)).astype(np.int32), "attention_mask": mask}


def _run(m, pert, capture, head_only, scan, inputs):
    mod = (Decoder if m.config.is_decoder else Encoder)(m.config, scan=scan)

    def f(params, inputs, pert):
        hooks = m._hooks(pert, capture, 0)
        logits = mod.apply({"params": params}, m._check_inputs(inputs), hooks, head_only=head_only)[2]
        return logits, hooks.captured

    return jax.jit(f)(m.params, inputs, pert)


def _perts(n, key):
    every = {f"blocks.{i}.hook_resid_post": Noise(key, jnp.float32(0.3)) for i in range(n)}
    return {
        "none": {},
        "resid_post": every,
        "embed_and_resid_post": {"hook_embed": Noise(key, jnp.float32(0.1)), **every},
        "mlp_post_relative": {f"blocks.{i}.mlp.hook_post": Noise(key, jnp.float32(0.2), relative=True) for i in range(n)},
        "mixed": {**every, "blocks.1.attn.hook_z": Add(jnp.full((), 0.1)),
                  "blocks.2.hook_resid_mid": Scale(jnp.float32(0.5), positions=jnp.array([0]))},
    }


@pytest.mark.parametrize("arch", list(CFGS))
def test_scan_equals_unrolled_to_rounding(arch):
    m = apex_jax.create(CFGS[arch], num_labels=3)
    n, b = m.config.n_layers, _batch()
    caps = tuple(f"blocks.{i}.{s}" for i in range(n) for s in ("hook_resid_post", "mlp.hook_post"))
    perts = _perts(n, jax.random.key(1))
    cases = [("resid_post", True, ()), ("embed_and_resid_post", False, caps), ("mlp_post_relative", False, ()),
             ("mixed", True, caps), ("none", False, caps)]  # (perturbation, head_only, capture)
    for name, head_only, capture in cases:
        a = _run(m, perts[name], capture, head_only, False, b)
        s = _run(m, perts[name], capture, head_only, True, b)
        assert set(a[1]) == set(s[1]) == set(capture)
        for k in capture:
            np.testing.assert_allclose(np.asarray(s[1][k]), np.asarray(a[1][k]), atol=2e-5, err_msg=k)
        np.testing.assert_allclose(np.asarray(s[0]), np.asarray(a[0]), atol=2e-5, err_msg=name)


def test_scan_under_vmap_and_prefix_equals_unrolled():
    m = apex_jax.create(CFGS["bert"], num_labels=3)
    b, n = _batch(), m.config.n_layers
    sites = [f"blocks.{i}.hook_resid_post" for i in range(1, n)]
    pre = m.prefix(m.params, b, sites)

    def logits(scan):
        mod = Encoder(m.config, scan=scan)

        def one(k):
            hooks = m._hooks({s: Noise(k, jnp.float32(0.3)) for s in sites}, (), pre.start)
            return mod.apply({"params": m.params}, (pre.hidden, pre.mask), hooks, start=pre.start, head_only=True)[2]

        return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 4))

    np.testing.assert_allclose(np.asarray(logits(True)), np.asarray(logits(False)), atol=2e-5)


def _dots(cfg, layers):
    m = apex_jax.create({**cfg, "num_hidden_layers": layers}, num_labels=2)
    b = _batch()
    sites = [f"blocks.{i}.hook_resid_post" for i in range(layers)]
    f = lambda p, k: m.apply(p, b, {s: Noise(k, jnp.float32(0.1)) for s in sites}, head_only=True).logits
    return str(jax.make_jaxpr(f)(m.params, jax.random.key(0))).count("dot_general")


def test_traced_program_does_not_grow_with_depth():
    # APEX's structure (noise on every block output, head_only): step 0, one scan, the last block
    assert _dots(CFGS["bert"], 3) == _dots(CFGS["bert"], 8)


def test_errors_name_the_layer_inside_a_scanned_group():
    m = apex_jax.create(CFGS["bert"], num_labels=3)
    pert = {f"blocks.{i}.hook_resid_post": Scale(jnp.float32(1.0), positions=jnp.array([0])) for i in range(4)}
    pert["blocks.2.hook_resid_post"] = Scale(jnp.float32(1.0), positions=jnp.array([20]))
    with pytest.raises(InputError, match=r"blocks\.2\.hook_resid_post.*outside"):
        m.apply(m.params, _batch(), pert)


def _concat_shapes(jaxpr) -> list[tuple]:
    """Output shapes of every stack/concatenate in a jaxpr and its sub-jaxprs (scan/cond/map bodies)."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("stack", "concatenate"):
            out += [tuple(v.aval.shape) for v in eqn.outvars]
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out += _concat_shapes(sub)
    return out


@pytest.mark.parametrize("arch", list(CFGS))
def test_stacked_params_are_bitwise_the_per_call_stack(arch):
    # stack_blocks hoists the stacking out of the caller's loop; the scan sees the same layer values
    m = apex_jax.create(CFGS[arch], num_labels=3)
    b, n = _batch(), m.config.n_layers
    stacked = stack_blocks(m.params, n)
    assert set(stacked) == set(m.params) | {STACKED} and stack_blocks(stacked, n) is stacked
    sites = [f"blocks.{i}.hook_resid_post" for i in range(n)]  # prefix to block 1; blocks 1-2 one scan
    pre = m.prefix(m.params, b, sites)

    def logits(params, keys):
        one = lambda k: m.apply(params, pre, {s: Noise(k, jnp.float32(0.3)) for s in sites}, head_only=True).logits
        return jax.lax.map(jax.vmap(one), keys)  # a loop over units, as the sweep kernel runs it

    keys = jax.random.split(jax.random.key(0), 6).reshape(2, 3)
    plain, hoisted = jax.jit(logits)(m.params, keys), jax.jit(logits)(stacked, keys)
    np.testing.assert_array_equal(np.asarray(hoisted), np.asarray(plain))
    full = m.apply(stacked, b, {s: Noise(keys[0, 0], jnp.float32(0.3)) for s in sites},
                   capture=("blocks.2.hook_resid_post",))
    ref = m.apply(m.params, b, {s: Noise(keys[0, 0], jnp.float32(0.3)) for s in sites},
                  capture=("blocks.2.hook_resid_post",))
    np.testing.assert_array_equal(np.asarray(full.logits), np.asarray(ref.logits))
    np.testing.assert_array_equal(np.asarray(full.captured["blocks.2.hook_resid_post"]),
                                  np.asarray(ref.captured["blocks.2.hook_resid_post"]))
    # the per-call stack is gone from the traced loop: no concatenate builds a [layers, d, d] weight
    d = m.config.d_model
    weights = lambda p: [s for s in _concat_shapes(jax.make_jaxpr(logits)(p, keys).jaxpr)
                         if len(s) == 3 and s[1:] == (d, d)]
    assert weights(m.params) and not weights(stacked)


def test_stack_blocks_names_missing_blocks():
    m = apex_jax.create(CFGS["bert"], num_labels=3)
    params = {k: v for k, v in m.params.items() if k != "blocks_2"}
    with pytest.raises(ValueError, match="blocks_2"):
        stack_blocks(params, m.config.n_layers)
