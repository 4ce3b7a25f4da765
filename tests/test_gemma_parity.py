"""Gemma 1, 2 and 3 (text) against transformers' *ForSequenceClassification / *ForCausalLM.

Tiny random models (2 layers, Gemma 3: 3; d_model 32, 4 query heads on 2 kv heads of width 12),
one per generation, each as a sequence classifier and as a causal LM:

  gemma   Gemma 1: (1 + w) RMSNorm, sqrt(d_model) embedding scale, GeGLU; attention biases on
  gemma2  four norms per block, query_pre_attn_scalar 20, attention and final soft-capping
          (caps small enough to bite), layer 0 sliding (window 3 < 9 tokens), layer 1 global
  gemma3  q/k norms, a local rope base for the sliding layers (1 and 2: one scanned group) and
          linear scaling on the global one (layer 0), final soft-capping, an untied LM head

Every site is compared on a right-padded batch: the residual stream against HF
`hidden_states`, patterns against `attentions`, block internals against forward hooks on the
HF modules (`hook_attn_out` / `hook_mlp_out` after the post-norms; `hook_resid_mid` is the
pre-feedforward norm's input), `head.hook_cls` and the logits. Tolerance 1e-5 in float32. Also:
the options each change the logits, a Noise intervention, padding sides / head_only / prefix,
save -> transformers -> load, strictness, refused options and config spellings.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax.interventions import Noise
from apex_jax.models import families
from tests.helpers import max_err, write_hf_folder
from tests.helpers.hf_decoder_reference import PAD, VOCAB, make_inputs, to_left, torch_forward
from tests.helpers.hf_parity import block_hooks, capture, random_model, split_heads

TOL = 1e-5
VARIANTS = ("gemma", "gemma2", "gemma3")
HEADS = ("seq", "lm")
N_HEADS, N_KV, D, D_HEAD = 4, 2, 32, 12

# Block internals: (HF submodule of the decoder layer, "in"/"out"); Gemma 1 is Llama-shaped.
_COMMON_SITES = {
    "attn.hook_q": ("self_attn.q_proj", "out"),
    "attn.hook_k": ("self_attn.k_proj", "out"),
    "attn.hook_v": ("self_attn.v_proj", "out"),
    "attn.hook_z": ("self_attn.o_proj", "in"),
    "mlp.hook_pre": ("mlp.gate_proj", "out"),
    "mlp.hook_post": ("mlp.down_proj", "in"),
    "hook_resid_pre": ("", "in"),
    "hook_resid_post": ("", "out"),
}
HF_SITES = {
    "gemma": {**_COMMON_SITES, "hook_attn_out": ("self_attn.o_proj", "out"),
              "hook_resid_mid": ("post_attention_layernorm", "in"), "hook_mlp_out": ("mlp.down_proj", "out")},
    "sandwich": {**_COMMON_SITES, "hook_attn_out": ("post_attention_layernorm", "out"),
                 "hook_resid_mid": ("pre_feedforward_layernorm", "in"),
                 "hook_mlp_out": ("post_feedforward_layernorm", "out")},
}


def hf_config(variant: str, n_labels: int = 3):
    import transformers as T

    common = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=N_HEADS, num_key_value_heads=N_KV, head_dim=D_HEAD,
                  max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                  num_labels=n_labels)
    if variant == "gemma":
        return T.GemmaConfig(**common, attention_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    if variant == "gemma2":  # layer_types left to the default (sliding, full)
        return T.Gemma2Config(**common, sliding_window=3, query_pre_attn_scalar=20, attn_logit_softcapping=1.5,
                              final_logit_softcapping=2.0, rope_parameters={"rope_type": "default", "rope_theta": 300.0})
    if variant == "gemma3":
        rope = {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 30.0}}
        return T.Gemma3TextConfig(**{**common, "num_hidden_layers": 3}, sliding_window=3, query_pre_attn_scalar=20,
                                  final_logit_softcapping=2.0, rope_parameters=rope, tie_word_embeddings=False,
                                  layer_types=["full_attention", "sliding_attention", "sliding_attention"])
    raise ValueError(variant)


def make_model(variant: str, head: str, folder, seed: int = 0):
    """Random HF Gemma (weights moved off their init, so the norms' (1 + w) and biases matter)."""
    import transformers as T

    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    return random_model(lambda: cls.from_config(hf_config(variant), attn_implementation="eager"), folder, seed)


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
            folder = tmp_path_factory.mktemp(f"{variant}-{head}")
            hf = make_model(variant, head, folder)
            cache[variant, head] = Ref(variant, head, folder, hf, apex_jax.load(folder), make_inputs())
        return cache[variant, head]

    return get


def hf_sites(r: Ref):
    """(HF outputs, block internals in apex-jax layouts) from forward hooks on the HF layers."""
    table = HF_SITES["gemma" if r.variant == "gemma" else "sandwich"]
    out, found = capture(block_hooks(r.hf.model.layers, table), lambda: torch_forward(r.hf, r.inputs))
    return out, split_heads(found, N_HEADS, D_HEAD, N_KV)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_every_site(ref, variant, head):
    r = ref(variant, head)
    model, mask = r.model, r.inputs["attention_mask"]
    cfg = model.config
    assert (cfg.arch, cfg.model_type, cfg.lm_head) == ("gemma", hf_config(variant).model_type, head == "lm")
    assert cfg.sliding_layers == {"gemma": (), "gemma2": (0,), "gemma3": (1, 2)}[variant]
    assert (mask == 0).any() and mask.sum(1).max() > 3  # padded, and longer than the window
    out = model.apply(model.params, r.inputs, capture=model.sites)
    assert set(out.captured) == set(model.sites)
    ref_out, internal = hf_sites(r)
    n = cfg.n_layers
    cls = np.asarray(model.classifier_positions(r.inputs))
    rows = np.arange(len(cls))
    hf_logits = ref_out.logits.numpy()
    if hf_logits.ndim == 3:
        hf_logits = hf_logits[rows, cls]
    errs = {"hook_embed": max_err(out.captured["hook_embed"], ref_out.hidden_states[0], mask)}
    for i in range(n):
        b = f"blocks.{i}"
        pattern = np.asarray(out.captured[f"{b}.attn.hook_pattern"]).transpose(0, 2, 1, 3)
        errs[f"{b}.attn.hook_pattern"] = max_err(pattern, ref_out.attentions[i].numpy().transpose(0, 2, 1, 3), mask)
        for local in HF_SITES["gemma"]:
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
        assert max_err(out.captured[f"{b}.hook_resid_pre"], ref_out.hidden_states[i], mask) <= TOL
        # the documented identities (post-norms sit before hook_attn_out / hook_mlp_out), to
        # rounding: inside a scanned group XLA may fuse the post-norm's product into the add
        c = {s: np.asarray(out.captured[f"{b}.{s}"]) for s in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid",
                                                                "hook_mlp_out", "hook_resid_post")}
        np.testing.assert_allclose(c["hook_resid_mid"], c["hook_resid_pre"] + c["hook_attn_out"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(c["hook_resid_post"], c["hook_resid_mid"] + c["hook_mlp_out"], rtol=1e-6, atol=1e-6)
    errs["ln_final.hook_normalized"] = max_err(out.captured["ln_final.hook_normalized"], ref_out.hidden_states[n], mask)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], ref_out.hidden_states[n].numpy()[rows, cls])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], hf_logits)
    errs["logits"] = max_err(out.logits, hf_logits)
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= TOL}
    assert not bad, f"{variant}/{head}: sites off the HF reference by more than {TOL}: {bad}"
    assert np.asarray(out.logits).std() > 1e-2
    assert out.logits.shape == (3, VOCAB if head == "lm" else 3)
    if head == "lm" and cfg.final_softcap is not None:  # the cap binds: logits within ±cap
        assert np.abs(np.asarray(out.logits)).max() < cfg.final_softcap


@pytest.mark.parametrize("variant, head, change", [
    ("gemma2", "seq", dict(sliding_window=None)),  # the window decides some keys
    ("gemma2", "seq", dict(attn_softcap=None)),
    ("gemma2", "lm", dict(final_softcap=None)),
    ("gemma3", "seq", dict(local_rope_theta=None)),  # the sliding layer with the global rope
    ("gemma3", "seq", dict(rope_scaling=())),  # the global layer unscaled
])
def test_options_matter(ref, variant, head, change):
    """Not vacuous: changing the option moves the logits well past the tolerance."""
    r = ref(variant, head)
    other = apex_jax.Model(dataclasses.replace(r.model.config, **change), r.model.params, r.model.hf_config)
    assert max_err(r.model.apply(r.model.params, r.inputs).logits, other.apply(other.params, r.inputs).logits) > 100 * TOL


def test_noise_intervention(ref):
    """Noise at one site moves the logits; sigma 0 gives the clean logits exactly; noise on
    hook_attn_out (after the post-norm) reaches resid_mid as an added term."""
    r = ref("gemma2", "seq")
    m = r.model
    site = "blocks.0.hook_attn_out"
    sites = (site, "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid")
    clean = m.apply(m.params, r.inputs, capture=sites)
    zero = m.apply(m.params, r.inputs, {site: Noise(jax.random.key(0), 0.0)}, capture=sites)
    noisy = m.apply(m.params, r.inputs, {site: Noise(jax.random.key(0), 0.5)}, capture=sites)
    np.testing.assert_array_equal(np.asarray(zero.logits), np.asarray(clean.logits))
    assert max_err(noisy.logits, clean.logits) > 1e-2
    c = {s: np.asarray(noisy.captured[s]) for s in sites}
    np.testing.assert_allclose(c[sites[2]], c[sites[1]] + c[site], rtol=1e-6, atol=1e-6)
    assert max_err(c[site], clean.captured[site]) > 0.1


def test_padding_head_only_and_prefix(ref):
    """Left = right padding; head_only (whose last block is a sliding one in gemma3) and a
    cached prefix give the full run's logits."""
    r = ref("gemma3", "lm")
    m, right = r.model, r.inputs
    left = to_left(right)
    full = m.apply(m.params, right).logits
    assert max_err(m.apply(m.params, left).logits, full) < TOL
    site = "blocks.2.hook_resid_mid"
    a = m.apply(m.params, left, capture=(site,))
    fast = m.apply(m.params, left, capture=(site,), head_only=True)
    assert max_err(fast.logits, full) < TOL
    cls = np.asarray(m.classifier_positions(left))
    assert max_err(fast.captured[site][:, 0], np.asarray(a.captured[site])[np.arange(3), cls]) < TOL
    pert = {"blocks.1.hook_attn_out": Noise(jax.random.key(1), 0.3)}
    prefix = m.prefix(m.params, left, until=list(pert))
    assert prefix.start == 1
    assert max_err(m.apply(m.params, prefix, pert).logits, m.apply(m.params, left, pert).logits) < TOL


@pytest.mark.parametrize("variant, head", [("gemma", "lm"), ("gemma2", "seq"), ("gemma3", "lm")])
def test_save_round_trip_through_transformers(ref, tmp_path, variant, head):
    import transformers as T
    from safetensors.numpy import load_file

    r = ref(variant, head)
    model = r.model
    folder = model.save(tmp_path / "saved")
    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(r.folder / "model.safetensors")))
    arch = json.loads((folder / "config.json").read_text())["architectures"]
    assert arch == [type(r.hf).__name__]
    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    hf, info = cls.from_pretrained(str(folder), attn_implementation="eager", output_loading_info=True)
    assert type(hf) is type(r.hf)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    logits = torch_forward(hf.eval(), r.inputs).logits.numpy()
    assert max_err(logits, torch_forward(r.hf, r.inputs).logits.numpy()) == 0  # the same HF model
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))


def test_fresh_gemma_norm_is_the_identity_scale():
    """Gemma's RMSNorm scales by (1 + w): a fresh model's scales start at 0 (as transformers
    initialises them), so a created model's norms are plain RMS normalisations."""
    from apex_jax.models.decoder import Norm

    cfg = families.from_hf(hf_config("gemma3").to_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, D)).astype(np.float32)
    variables = Norm(cfg).init(jax.random.key(0), x)
    assert not np.asarray(variables["params"]["scale"]).any()
    want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + cfg.norm_eps)
    assert max_err(Norm(cfg).apply(variables, x), want) < 1e-6
    w = np.linspace(-0.5, 0.5, D, dtype=np.float32)
    assert max_err(Norm(cfg).apply({"params": {"scale": w}}, x), want * (1 + w)) < 1e-6



def test_strict_conversion_names_the_weight(ref, tmp_path):
    from safetensors.numpy import load_file

    r = ref("gemma3", "seq")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = json.loads((r.folder / "config.json").read_text())
    key = "model.layers.1.self_attn.k_norm.weight"
    with pytest.raises(ValueError, match=r"missing weights: \['layers\.1\.self_attn\.k_norm\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['extra\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, {**state, "extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['layers\.1\.self_attn\.k_norm\.weight: \(32,\), expected \(12,\)"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, {**state, key: np.zeros(D, np.float32)}))
    # a Gemma 2 checkpoint read as Gemma 1 leaves its extra norms over
    g1 = {**cfg, "model_type": "gemma"}
    with pytest.raises(ValueError, match=r"unused weights: \[.*post_feedforward_layernorm"):
        apex_jax.load(write_hf_folder(tmp_path, "as_gemma1", g1, state))


def test_refused_options():
    def cfg(variant, **change):
        return {**hf_config(variant).to_dict(), **change}

    cases = [
        (cfg("gemma2", use_bidirectional_attention=True), "use_bidirectional_attention is not supported"),
        (cfg("gemma3", use_bidirectional_attention=True), "use_bidirectional_attention is not supported"),
        (cfg("gemma2", rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}),
         "unsupported rope type 'yarn'; supported: default, linear"),
        (cfg("gemma3", rope_parameters={"full_attention": {"rope_type": "dynamic", "factor": 2.0},
                                        "sliding_attention": {"rope_type": "default"}}),
         "unsupported rope type 'dynamic' on full_attention layers"),
        (cfg("gemma3", rope_parameters={"sliding_attention": {"rope_type": "linear", "factor": 2.0}}),
         "unsupported rope type 'linear' on sliding_attention layers; supported: default"),
        (cfg("gemma3", rope_parameters={"rope_type": "default", "rope_theta": 1e4}),
         "gemma3_text rope_parameters must be keyed by layer type"),
        (cfg("gemma2", layer_types=["sliding_attention", "chunked_attention"]), r"unsupported layer types \['chunked_attention'\]"),
        (cfg("gemma2", layer_types=["sliding_attention"]), "layer_types has 1 entries for 2 layers"),
        (cfg("gemma2", sliding_window=None), "sliding_window is null"),
        (cfg("gemma2", hidden_activation="mish"), "unsupported activation 'mish'"),
        (cfg("gemma2", attn_logit_softcapping=0.0), "attn_logit_softcapping must be a positive number or null"),
    ]
    for hf, message in cases:
        with pytest.raises(ValueError, match=message):
            apex_jax.create(hf, num_labels=2)
    missing = {k: v for k, v in hf_config("gemma3").to_dict().items() if k != "intermediate_size"}
    with pytest.raises(ValueError, match="lacks the entry 'intermediate_size'"):
        apex_jax.create(missing, num_labels=2)
    with pytest.raises(ValueError, match=r"unsupported model_type 'gemma3'; supported: .*gemma, gemma2, gemma3_text"):
        apex_jax.create({**hf_config("gemma3").to_dict(), "model_type": "gemma3"}, num_labels=2)


def test_config_spellings_and_defaults():
    """Layer types and rope bases as transformers derives them; the 4.x spellings of published
    checkpoints (rope_theta, rope_local_base_freq, rope_scaling) give the transformers 5 config;
    Gemma 1's "gelu" is the tanh GELU; entries a config lacks take the config class's defaults."""
    import transformers as T

    for hf in (T.Gemma2Config(num_hidden_layers=5), T.Gemma3TextConfig(num_hidden_layers=13),
               T.Gemma3TextConfig(num_hidden_layers=7, sliding_window_pattern=3)):
        c = families.from_hf(hf.to_dict())
        assert c.sliding_layers == tuple(i for i, t in enumerate(hf.layer_types) if t == "sliding_attention")
        assert c.sliding_window == hf.sliding_window
    g3 = T.Gemma3TextConfig(num_hidden_layers=2, rope_theta=5e5, rope_local_base_freq=200.0,
                            rope_scaling={"rope_type": "linear", "factor": 8.0})
    new = families.from_hf(g3.to_dict())
    assert (new.rope_theta, new.local_rope_theta, new.rope_scaling) == (5e5, 200.0, (("factor", 8.0), ("rope_type", "linear")))
    old = {k: v for k, v in g3.to_dict().items() if k != "rope_parameters"}
    old.update(rope_theta=5e5, rope_local_base_freq=200.0, rope_scaling={"rope_type": "linear", "factor": 8.0})
    assert families.from_hf(old) == new
    bare = {k: g3.to_dict()[k] for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size",
                                         "num_hidden_layers", "num_attention_heads")}
    d = families.from_hf(bare)  # transformers' own defaults for the rest (token ids aside)
    ref = families.from_hf(T.Gemma3TextConfig(**{k: v for k, v in bare.items() if k != "model_type"}).to_dict())
    assert dataclasses.replace(d, eos_token_id=ref.eos_token_id, pad_token_id=ref.pad_token_id) == ref
    assert (d.d_head, d.attn_scalar, d.local_rope_theta, d.rope_theta) == (256, 256.0, 1e4, 1e6)
    g2 = families.from_hf({**bare, "model_type": "gemma2"})
    assert (g2.attn_softcap, g2.final_softcap, g2.sliding_layers) == (50.0, 30.0, (0,))
    g1 = families.from_hf({**hf_config("gemma").to_dict(), "hidden_act": "gelu"})
    assert (g1.act, g1.sandwich_norms, g1.attn_scalar, g1.sliding_layers) == ("gelu_pytorch_tanh", False, 12.0, ())
