"""GPT-NeoX (Pythia) against transformers' GPTNeoXForSequenceClassification / GPTNeoXForCausalLM.

Tiny random models (2 layers, d_model 64, 4 heads) in three variants: rotary_pct 0.25 (Pythia)
and 1.0, parallel residual on (Pythia) and off. Every site is compared on a right-padded batch,
as in tests/test_decoder_parity.py: the residual stream against HF `hidden_states`, patterns
against `attentions`, block internals against forward hooks on the HF modules (q/k/v from the
fused query_key_value output, viewed per head as [q, k, v]), `head.hook_cls` and the logits.
Under the parallel residual `hook_resid_mid` is resid_pre + attn_out (the MLP reads resid_pre).
Tolerance 1e-5 in float32. Also: save -> transformers -> load round trip, Pythia's older
spellings (embed_out, rotary_pct, buffers), strictness, padding sides, head_only and prefixes.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax.interventions import Noise
from tests.helpers import max_err, write_hf_folder
from tests.helpers.hf_decoder_reference import (
    PAD,
    VOCAB,
    make_inputs,
    to_left,
    torch_forward,
)
from tests.helpers.hf_parity import block_hooks, capture, random_model, split_heads

TOL = 1e-5
# name -> (rotary_pct, use_parallel_residual)
VARIANTS = {"pythia": (0.25, True), "seq_res": (0.25, False), "full_seq": (1.0, False)}
# Each option value and each head once (the options are independent code paths; every cell is a
# torch model, a load and a compile, so the full product would double the file's time).
CELLS = [("pythia", "seq"), ("pythia", "lm"), ("seq_res", "seq"), ("full_seq", "lm")]
N_HEADS, D, D_HEAD = 4, 64, 16

# Block internals: (HF submodule of GPTNeoXLayer, "in"/"out").
HF_SITES = {
    "attn.hook_qkv": ("attention.query_key_value", "out"),
    "attn.hook_z": ("attention.dense", "in"),
    "hook_attn_out": ("attention.dense", "out"),
    "mlp.hook_pre": ("mlp.dense_h_to_4h", "out"),
    "mlp.hook_post": ("mlp.dense_4h_to_h", "in"),
    "hook_mlp_out": ("mlp.dense_4h_to_h", "out"),
    "hook_resid_pre": ("", "in"),
    "hook_resid_post": ("", "out"),
}


def hf_config(variant: str, n_labels: int = 3):
    import transformers as T

    pct, parallel = VARIANTS[variant]
    return T.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=N_HEADS,
        intermediate_size=96, max_position_embeddings=64, rotary_pct=pct, rotary_emb_base=500.0,
        use_parallel_residual=parallel, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
        num_labels=n_labels,
    )


def make_model(variant: str, head: str, folder, seed: int = 0):
    """Random HF GPT-NeoX (weights moved off their init so norms and biases matter)."""
    import transformers as T

    cls = T.GPTNeoXForSequenceClassification if head == "seq" else T.GPTNeoXForCausalLM
    return random_model(lambda: cls(hf_config(variant)), folder, seed, eager=True)


@dataclasses.dataclass
class Ref:
    variant: str
    head: str
    folder: object
    hf: object
    model: object
    inputs: dict


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    cache: dict = {}

    def get(variant: str, head: str) -> Ref:
        if (variant, head) not in cache:
            folder = tmp_path_factory.mktemp(f"neox-{variant}-{head}")
            hf = make_model(variant, head, folder)
            cache[variant, head] = Ref(variant, head, folder, hf, apex_jax.load(folder), make_inputs())
        return cache[variant, head]

    return get


def hf_sites(r: Ref):
    """(HF outputs, block internals in apex-jax layouts) from forward hooks on the HF layers."""
    out, found = capture(block_hooks(r.hf.gpt_neox.layers, HF_SITES), lambda: torch_forward(r.hf, r.inputs))
    sites = split_heads(found, N_HEADS, D_HEAD, kinds=("z",))
    for site, v in found.items():
        if site.endswith("hook_qkv"):  # HF: view [b, p, heads, 3 * d_head], chunk the last axis
            q, k, v_ = np.split(v.reshape(*v.shape[:2], N_HEADS, 3 * D_HEAD), 3, axis=-1)
            stem = site[: -len("hook_qkv")]
            sites.update({f"{stem}hook_q": q, f"{stem}hook_k": k, f"{stem}hook_v": v_})
            del sites[site]
    for i in range(len(r.hf.gpt_neox.layers)):
        # resid_mid = resid_pre + attn_out in both variants (HF's post_attention_layernorm input
        # when the residual is sequential).
        b = f"blocks.{i}"
        sites[f"{b}.hook_resid_mid"] = sites[f"{b}.hook_resid_pre"] + sites[f"{b}.hook_attn_out"]
    return out, sites


@pytest.mark.parametrize("variant, head", CELLS)
def test_parity_every_site(ref, variant, head):
    r = ref(variant, head)
    model, mask = r.model, r.inputs["attention_mask"]
    cfg = model.config
    pct, parallel = VARIANTS[variant]
    assert (cfg.arch, cfg.parallel_residual, cfg.rope_dim, cfg.lm_head) == ("neox", parallel, int(16 * pct), head == "lm")
    assert (mask == 0).any()
    out = model.apply(model.params, r.inputs, capture=model.sites)
    assert set(out.captured) == set(model.sites)
    ref_out, internal = hf_sites(r)
    n = cfg.n_layers
    cls = np.asarray(model.classifier_positions(r.inputs))
    np.testing.assert_array_equal(cls, mask.sum(1) - 1)
    rows = np.arange(len(cls))
    hf_logits = ref_out.logits.numpy()
    if hf_logits.ndim == 3:
        hf_logits = hf_logits[rows, cls]
    errs = {"hook_embed": max_err(out.captured["hook_embed"], ref_out.hidden_states[0], mask)}
    for i in range(n):
        b = f"blocks.{i}"
        pattern = np.asarray(out.captured[f"{b}.attn.hook_pattern"]).transpose(0, 2, 1, 3)
        errs[f"{b}.attn.hook_pattern"] = max_err(pattern, ref_out.attentions[i].numpy().transpose(0, 2, 1, 3), mask)
        for local in ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out",
                      "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"):
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
        assert max_err(out.captured[f"{b}.hook_resid_pre"], ref_out.hidden_states[i], mask) <= TOL
    errs["ln_final.hook_normalized"] = max_err(out.captured["ln_final.hook_normalized"], ref_out.hidden_states[n], mask)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], ref_out.hidden_states[n].numpy()[rows, cls])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], hf_logits)
    errs["logits"] = max_err(out.logits, hf_logits)
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= TOL}
    assert not bad, f"{variant}/{head}: sites off the HF reference by more than {TOL}: {bad}"
    assert np.asarray(out.logits).std() > 1e-3
    assert out.logits.shape == (3, VOCAB if head == "lm" else 3)


@pytest.mark.parametrize("variant, change", [
    ("pythia", dict(parallel_residual=False)),
    ("seq_res", dict(parallel_residual=True)),
    ("pythia", dict(rotary_dim=None)),  # all 16 dimensions rotated instead of 4
    ("full_seq", dict(rotary_dim=8)),
])
def test_options_matter(ref, variant, change):
    """Not vacuous: changing the option moves the logits well past the tolerance."""
    r = ref(variant, "lm" if (variant, "seq") not in CELLS else "seq")
    other = apex_jax.Model(dataclasses.replace(r.model.config, **change), r.model.params, r.model.hf_config)
    assert max_err(r.model.apply(r.model.params, r.inputs).logits, other.apply(other.params, r.inputs).logits) > 10 * TOL


def test_resid_mid_under_parallel_residual(ref):
    """Parallel residual: the MLP reads resid_pre, so noise at resid_mid reaches resid_post but
    leaves the MLP's sites unchanged; sequential: it reaches the MLP."""
    for variant, reaches_mlp in (("pythia", False), ("seq_res", True)):
        r = ref(variant, "seq")
        m = r.model
        sites = ("blocks.0.mlp.hook_pre", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post")
        clean = m.apply(m.params, r.inputs, capture=sites)
        noisy = m.apply(m.params, r.inputs, {"blocks.0.hook_resid_mid": Noise(jax.random.key(0), 0.5)}, capture=sites)
        mlp_moved = max_err(noisy.captured[sites[1]], clean.captured[sites[1]])
        assert (mlp_moved > 1e-3) == reaches_mlp, (variant, mlp_moved)
        assert max_err(noisy.captured[sites[2]], clean.captured[sites[2]]) > 1e-3


@pytest.mark.parametrize("variant", ["pythia", "full_seq"])
def test_padding_head_only_and_prefix(ref, variant):
    """Left = right padding; head_only and a cached prefix give the full run's logits."""
    r = ref(variant, "lm")
    m, right = r.model, r.inputs
    left = to_left(right)
    full = m.apply(m.params, right).logits
    assert max_err(m.apply(m.params, left).logits, full) < TOL
    last = m.config.n_layers - 1
    site = f"blocks.{last}.hook_resid_mid"
    a = m.apply(m.params, left, capture=(site,))
    fast = m.apply(m.params, left, capture=(site,), head_only=True)
    assert max_err(fast.logits, full) < TOL
    cls = np.asarray(m.classifier_positions(left))
    assert max_err(fast.captured[site][:, 0], np.asarray(a.captured[site])[np.arange(3), cls]) < TOL
    pert = {"blocks.1.hook_resid_mid": Noise(jax.random.key(1), 0.3)}
    prefix = m.prefix(m.params, left, until=list(pert))
    assert prefix.start == 1
    assert max_err(m.apply(m.params, prefix, pert).logits, m.apply(m.params, left, pert).logits) < TOL


@pytest.mark.parametrize("variant, head", [("pythia", "seq"), ("full_seq", "lm")])
def test_save_round_trip_through_transformers(ref, tmp_path, variant, head):
    import transformers as T

    r = ref(variant, head)
    model = r.model
    folder = model.save(tmp_path / "saved")
    from safetensors.numpy import load_file

    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(r.folder / "model.safetensors")))
    arch = json.loads((folder / "config.json").read_text())["architectures"]
    assert arch == ["GPTNeoXForSequenceClassification" if head == "seq" else "GPTNeoXForCausalLM"]
    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    hf, info = cls.from_pretrained(str(folder), attn_implementation="eager", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    logits = torch_forward(hf.eval(), r.inputs).logits.numpy()
    assert max_err(logits, torch_forward(r.hf, r.inputs).logits.numpy()) < TOL  # the same HF model
    if logits.ndim == 3:
        logits = logits[np.arange(3), np.asarray(model.classifier_positions(r.inputs))]
    assert max_err(model.apply(model.params, r.inputs).logits, logits) < TOL
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))



def test_pythia_spellings_load(ref, tmp_path):
    """Pythia's config.json spelling (rotary_pct / rotary_emb_base, no rope_parameters), the
    per-layer buffers older checkpoints carry, and the head as `lm_head` (the module's name in
    transformers 5) instead of `embed_out` give the same model."""
    from safetensors.numpy import load_file

    r = ref("pythia", "lm")
    state = load_file(str(r.folder / "model.safetensors"))
    state["lm_head.weight"] = state.pop("embed_out.weight")
    for i in range(2):
        state[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = np.ones(2, np.float32)
        state[f"gpt_neox.layers.{i}.attention.bias"] = np.ones((1, 1, 4, 4), bool)
        state[f"gpt_neox.layers.{i}.attention.masked_bias"] = np.array(-1e9, np.float32)
    cfg = json.loads((r.folder / "config.json").read_text())
    cfg.pop("rope_parameters")
    cfg.update(rotary_pct=0.25, rotary_emb_base=500.0)
    m = apex_jax.load(write_hf_folder(tmp_path, "pythia", cfg, state))
    assert m.config == r.model.config
    assert max_err(m.apply(m.params, r.inputs).logits, r.model.apply(r.model.params, r.inputs).logits) == 0


def test_strict_conversion_names_the_weight(ref, tmp_path):
    from safetensors.numpy import load_file

    r = ref("pythia", "seq")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = json.loads((r.folder / "config.json").read_text())
    key = "gpt_neox.layers.1.attention.query_key_value.bias"
    with pytest.raises(ValueError, match=r"missing weights: \['layers\.1\.attention\.query_key_value\.bias'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['extra\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, {**state, "extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['layers\.1\.attention\.query_key_value\.bias"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, {**state, key: np.zeros(3 * D + 3, np.float32)}))


def test_config_errors_and_unknown_model_type():
    base = hf_config("pythia").to_dict()
    with pytest.raises(ValueError, match=r"unsupported model_type 'nope'; supported: .*gpt2.*gpt_neox.*llama"):
        apex_jax.create({**base, "model_type": "nope"}, num_labels=2)
    odd = {**base, "rope_parameters": {**base["rope_parameters"], "partial_rotary_factor": 0.3}}
    assert apex_jax.create(odd, num_labels=2).config.rope_dim == 4  # int(16 * 0.3), as HF
    with pytest.raises(ValueError, match=r"rotary_pct 0\.1 gives 1 rotary dimensions"):
        apex_jax.create({**base, "rope_parameters": {**base["rope_parameters"], "partial_rotary_factor": 0.1}}, num_labels=2)
    with pytest.raises(ValueError, match="unsupported GPT-NeoX rope type 'linear'; supported: default"):
        apex_jax.create({**base, "rope_parameters": {**base["rope_parameters"], "rope_type": "linear", "factor": 2.0}},
                        num_labels=2)
    with pytest.raises(ValueError, match="lacks the entry 'intermediate_size'"):
        apex_jax.create({k: v for k, v in base.items() if k != "intermediate_size"}, num_labels=2)
    m = apex_jax.create(base, num_labels=None, lm_head=True)
    assert "blocks.1.hook_resid_mid" in m.sites and len(m.sites) == 1 + 2 * 12 + 3
    assert m.apply(m.params, make_inputs()).logits.shape == (3, VOCAB)


def test_fresh_score_head_on_a_causal_lm(ref):
    """num_labels on a GPT-NeoX causal-LM folder: a fresh score head replaces embed_out, the body
    is the checkpoint's (the same final-normed vector at the classifier token)."""
    r = ref("pythia", "lm")
    m = apex_jax.load(r.folder, num_labels=2)
    assert (m.config.n_classes, m.config.lm_head) == (2, False)
    a = m.apply(m.params, r.inputs, capture=("head.hook_cls",))
    b = r.model.apply(r.model.params, r.inputs, capture=("head.hook_cls",))
    assert a.logits.shape == (3, 2)
    assert max_err(a.captured["head.hook_cls"], b.captured["head.hook_cls"]) == 0
