"""Phi-3 against transformers' Phi3ForSequenceClassification / Phi3ForCausalLM.

Tiny random models (2 layers, d_model 32, 4 query heads of 8) in two variants:
  mini      default rope, 2 kv heads, untied LM head (Phi-3-mini's shape of options);
  longrope  LongRoPE (short/long factors, attention factor sqrt(3) from max_position_embeddings
            64 / original 4), partial_rotary_factor 0.5, one kv head, sliding window 4 < 9
            tokens, tied LM head (Phi-4-mini's options, and Phi-3-mini-4k's window).
Every site is compared on a right-padded batch, as in tests/test_neox_parity.py: the residual
stream against HF `hidden_states`, patterns against `attentions`, block internals against forward
hooks on the HF modules (q/k/v from the fused qkv_proj output split [all q heads | k | v], the
gate from the first half of gate_up_proj). Tolerance 1e-5 in float32. In the longrope variant
every example (9, 7, 5 tokens) is longer than the original 4, so HF's per-batch choice of the
long factors is ours per example; `test_longrope_regime_per_example` checks the short factors and
the per-example choice against HF on single unpadded inputs. Also: save -> transformers -> load
round trip, strictness, refused options, an intervention, head_only and prefixes.
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
from tests.helpers.hf_decoder_reference import (
    PAD,
    VOCAB,
    make_inputs,
    to_left,
    torch_forward,
)
from tests.helpers.hf_parity import block_hooks, capture, random_model, split_heads

TOL = 1e-5
VARIANTS = ("mini", "longrope")
HEADS = ("seq", "lm")
N_HEADS, D, D_HEAD, D_MLP = 4, 32, 8, 37
LONGROPE = {"rope_type": "longrope", "rope_theta": 500.0, "partial_rotary_factor": 0.5,
            "short_factor": [1.0, 1.7], "long_factor": [2.5, 6.0]}

# Block internals: (HF submodule of Phi3DecoderLayer, "in"/"out").
HF_SITES = {
    "attn.hook_qkv": ("self_attn.qkv_proj", "out"),
    "attn.hook_z": ("self_attn.o_proj", "in"),
    "hook_attn_out": ("self_attn.o_proj", "out"),
    "hook_resid_mid": ("post_attention_layernorm", "in"),
    "mlp.hook_gate_up": ("mlp.gate_up_proj", "out"),
    "mlp.hook_post": ("mlp.down_proj", "in"),
    "hook_mlp_out": ("mlp.down_proj", "out"),
    "hook_resid_pre": ("", "in"),
    "hook_resid_post": ("", "out"),
}


def hf_config(variant: str, n_labels: int = 3, **change):
    import transformers as T

    kw = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=D_MLP, num_hidden_layers=2,
              num_attention_heads=N_HEADS, num_key_value_heads=2, max_position_embeddings=64,
              pad_token_id=PAD, bos_token_id=1, eos_token_id=2, num_labels=n_labels)
    if variant == "longrope":
        kw.update(num_key_value_heads=1, rope_parameters=dict(LONGROPE), original_max_position_embeddings=4,
                  sliding_window=4, tie_word_embeddings=True)
    return T.Phi3Config(**{**kw, **change})


def make_model(config, head: str, folder, seed: int = 0, state=None):
    """Random HF Phi-3 (weights moved off their init so norms matter), or `state`'s weights."""
    import transformers as T

    cls = T.Phi3ForSequenceClassification if head == "seq" else T.Phi3ForCausalLM
    if state is None:
        return random_model(lambda: cls(config), folder, seed, eager=True)
    model = cls(config)
    model.config._attn_implementation = "eager"
    model.load_state_dict(state)
    model.eval().save_pretrained(str(folder))
    return model


@dataclasses.dataclass
class Ref:
    variant: str
    head: str
    folder: object
    hf: object
    model: object
    inputs: dict
    _clean: np.ndarray | None = None

    def clean(self) -> np.ndarray:
        """The model's logits on `inputs`, computed once (each eager apply costs ~1 s of CPU)."""
        if self._clean is None:
            self._clean = np.asarray(self.model.apply(self.model.params, self.inputs).logits)
        return self._clean


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    cache: dict = {}

    def get(variant: str, head: str) -> Ref:
        if (variant, head) not in cache:
            folder = tmp_path_factory.mktemp(f"phi3-{variant}-{head}")
            hf = make_model(hf_config(variant), head, folder)
            cache[variant, head] = Ref(variant, head, folder, hf, apex_jax.load(folder), make_inputs())
        return cache[variant, head]

    return get


def hf_sites(r: Ref):
    """(HF outputs, block internals in apex-jax layouts) from forward hooks on the HF layers."""
    out, found = capture(block_hooks(r.hf.model.layers, HF_SITES), lambda: torch_forward(r.hf, r.inputs))
    kv = r.hf.config.num_key_value_heads
    sites = {}
    for site, v in split_heads(found, N_HEADS, D_HEAD, kinds=("z",)).items():
        b, p = v.shape[:2]
        if site.endswith("attn.hook_qkv"):  # HF: [all query heads | kv heads' keys | their values]
            q, k, v_ = np.split(v, [N_HEADS * D_HEAD, (N_HEADS + kv) * D_HEAD], axis=-1)
            stem = site[: -len("hook_qkv")]
            sites.update({f"{stem}hook_q": q.reshape(b, p, N_HEADS, D_HEAD),
                          f"{stem}hook_k": k.reshape(b, p, kv, D_HEAD), f"{stem}hook_v": v_.reshape(b, p, kv, D_HEAD)})
        elif site.endswith("hook_gate_up"):  # HF: chunk(2): the gate, then up
            sites[site.replace("hook_gate_up", "hook_pre")] = np.split(v, 2, axis=-1)[0]
        else:
            sites[site] = v
    return out, sites


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_every_site(ref, variant, head):
    r = ref(variant, head)
    model, mask = r.model, r.inputs["attention_mask"]
    cfg = model.config
    long = variant == "longrope"
    assert (cfg.arch, cfg.mlp_kind, cfg.lm_head, cfg.tie_embeddings) == ("phi3", "gated_fused", head == "lm", long)
    assert (cfg.n_kv_heads, cfg.rope_dim, cfg.rope_type) == ((1, 4, "longrope") if long else (2, 8, "default"))
    assert cfg.sliding_layers == ((0, 1) if long else ())
    assert cfg.rope_attention_factor == pytest.approx(np.sqrt(3) if long else 1.0)  # sqrt(1 + ln 16 / ln 4)
    assert (mask == 0).any() and mask.sum(1).min() > (4 if long else 0)  # long: every example past the original 4
    out = model.apply(model.params, r.inputs, capture=model.sites)
    assert set(out.captured) == set(model.sites)
    r._clean = np.asarray(out.logits)  # reused by the other tests (compared here to HF's)
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


def _with_scaling(cfg, **change):
    return dataclasses.replace(cfg, rope_scaling=tuple(sorted({**dict(cfg.rope_scaling), **change}.items())))


@pytest.mark.parametrize("variant, change", [
    ("longrope", "short_factors"),  # the short factors where the long ones apply
    ("longrope", "no_attention_factor"),
    ("longrope", dict(sliding_window=None, sliding_layers=())),
    ("mini", dict(rotary_dim=4)),  # half of each head rotated instead of all 8 dimensions
])
def test_options_matter(ref, variant, change):
    """Not vacuous: changing the option moves the logits well past the tolerance."""
    r = ref(variant, "seq")
    cfg = r.model.config
    if change == "short_factors":
        other_cfg = _with_scaling(cfg, long_factor=dict(cfg.rope_scaling)["short_factor"])
    elif change == "no_attention_factor":
        other_cfg = _with_scaling(cfg, attention_factor=1.0)
    else:
        other_cfg = dataclasses.replace(cfg, **change)
    other = apex_jax.Model(other_cfg, r.model.params, r.model.hf_config)
    assert max_err(r.clean(), other.apply(other.params, r.inputs).logits) > 10 * TOL


def test_longrope_regime_per_example(ref, tmp_path):
    """With original_max_position_embeddings 6, examples of 9 and 7 tokens take the long factors
    and one of 5 the short ones: the padded batch matches HF run on each example alone."""
    r = ref("longrope", "lm")
    state = {k: v.clone() for k, v in r.hf.state_dict().items()}
    hf = make_model(hf_config("longrope", original_max_position_embeddings=6), "lm", tmp_path, state=state)
    m = apex_jax.load(tmp_path)
    assert dict(m.config.rope_scaling)["original_max_position_embeddings"] == 6
    ours = np.asarray(m.apply(m.params, r.inputs).logits)
    ids, mask = r.inputs["input_ids"], r.inputs["attention_mask"]
    lengths = mask.sum(1)
    assert list(lengths) == [9, 7, 5]
    for i, n in enumerate(lengths):
        single = {"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]}
        assert max_err(ours[i], torch_forward(hf, single).logits[0, -1].numpy()) < TOL, (i, n)
    # not vacuous: HF's padded batch (9 > 6: the long factors for all) reads the short example otherwise
    batch = torch_forward(hf, r.inputs).logits.numpy()[np.arange(3), lengths - 1]
    assert max_err(batch[:2], ours[:2]) < TOL and max_err(batch[2], ours[2]) > 10 * TOL


def test_noise_intervention(ref):
    """Noise at one site moves the logits; at sigma 0 every key gives bitwise the same logits,
    the clean ones to float rounding (as tests/test_interventions.py: the clean forward is another
    compiled program, which XLA may round differently by ~1e-7)."""
    r = ref("longrope", "seq")
    m = r.model
    site = "blocks.0.mlp.hook_pre"
    draw = jax.jit(lambda key, sigma: m.apply(m.params, r.inputs, {site: Noise(key, sigma)}).logits)
    k0, k1 = jax.random.split(jax.random.key(0))
    zero = np.asarray(draw(k0, np.float32(0.0)))
    np.testing.assert_array_equal(np.asarray(draw(k1, np.float32(0.0))), zero)
    assert max_err(zero, r.clean()) <= 1e-6
    noisy = [np.asarray(draw(k, np.float32(0.5))) for k in (k0, k1)]
    assert min(max_err(n, zero) for n in noisy) > 1e-3 and max_err(noisy[0], noisy[1]) > 1e-3


def test_padding_head_only_and_prefix(ref):
    """Left = right padding (positions, windows and the LongRoPE choice follow the mask); head_only
    and a cached prefix give the full run's logits."""
    r = ref("longrope", "lm")
    m, right = r.model, r.inputs
    left = to_left(right)
    full = r.clean()
    assert max_err(m.apply(m.params, left).logits, full) < TOL
    fast = m.apply(m.params, left, head_only=True)
    assert max_err(fast.logits, full) < TOL
    pert = {"blocks.1.hook_resid_mid": Noise(jax.random.key(1), 0.3)}
    prefix = m.prefix(m.params, left, until=list(pert))
    assert prefix.start == 1
    assert max_err(m.apply(m.params, prefix, pert).logits, m.apply(m.params, left, pert).logits) < TOL


@pytest.mark.parametrize("variant, head", [("mini", "seq"), ("longrope", "lm")])  # a score head; a tied LM head
def test_save_round_trip_through_transformers(ref, tmp_path, variant, head):
    import transformers as T
    from safetensors.numpy import load_file

    r = ref(variant, head)
    model = r.model
    folder = model.save(tmp_path / "saved")
    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(r.folder / "model.safetensors")))
    arch = json.loads((folder / "config.json").read_text())["architectures"]
    assert arch == ["Phi3ForSequenceClassification" if head == "seq" else "Phi3ForCausalLM"]
    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    hf, info = cls.from_pretrained(str(folder), attn_implementation="eager", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    logits = torch_forward(hf.eval(), r.inputs).logits.numpy()
    assert max_err(logits, torch_forward(r.hf, r.inputs).logits.numpy()) < TOL  # the same HF model
    if logits.ndim == 3:
        logits = logits[np.arange(3), np.asarray(model.classifier_positions(r.inputs))]
    assert max_err(r.clean(), logits) < TOL
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))



def test_strict_conversion_names_the_weight(ref, tmp_path):
    from safetensors.numpy import load_file

    r = ref("mini", "seq")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = json.loads((r.folder / "config.json").read_text())
    key = "model.layers.1.self_attn.qkv_proj.weight"
    with pytest.raises(ValueError, match=r"missing weights: \['layers\.1\.self_attn\.qkv_proj\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['layers\.0\.self_attn\.qkv_proj\.bias'\]"):
        bias = np.zeros((N_HEADS + 4) * D_HEAD, np.float32)
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, {**state, "model.layers.0.self_attn.qkv_proj.bias": bias}))
    # a checkpoint whose kv heads disagree with the config: qkv_proj has 4 + 2 * 4 heads, not 4 + 2 * 2
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['layers\.1\.self_attn\.qkv_proj\.weight: "
                                         r"\(96, 32\), expected \(64, 32\)"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, {**state, key: np.zeros((96, D), np.float32)}))


def test_config_options_computed_or_refused():
    base = hf_config("longrope").to_dict()
    rope = base["rope_parameters"]
    with pytest.raises(ValueError, match=r"unsupported model_type 'nope'; supported: .*gpt_neox.*llama.*phi3"):
        apex_jax.create({**base, "model_type": "nope"}, num_labels=2)
    with pytest.raises(ValueError, match="unsupported Phi-3 rope type 'dynamic'; supported: default, longrope"):
        apex_jax.create({**base, "rope_parameters": {**rope, "rope_type": "dynamic", "factor": 2.0}}, num_labels=2)
    with pytest.raises(ValueError, match="per-layer-type rope parameters are not supported"):
        apex_jax.create({**base, "rope_parameters": {"full_attention": rope}}, num_labels=2)
    with pytest.raises(ValueError, match=r"needs \['long_factor'\]"):
        apex_jax.create({**base, "rope_parameters": {k: v for k, v in rope.items() if k != "long_factor"}}, num_labels=2)
    with pytest.raises(ValueError, match=r"longrope short_factor must list 2 numbers"):
        apex_jax.create({**base, "rope_parameters": {**rope, "short_factor": [1.0, 1.0, 1.0]}}, num_labels=2)
    with pytest.raises(ValueError, match=r"partial_rotary_factor 0\.1 gives 0 rotary dimensions"):
        apex_jax.create({**base, "rope_parameters": {**rope, "partial_rotary_factor": 0.1}}, num_labels=2)
    with pytest.raises(ValueError, match="lacks the entry 'intermediate_size'"):
        apex_jax.create({k: v for k, v in base.items() if k != "intermediate_size"}, num_labels=2)
    # Phi-3-mini-128k's 4.x spelling: rope_scaling of type "su" (longrope), rope_theta at the top level;
    # its factor is max_position_embeddings / original, and an explicit attention_factor wins.
    legacy = {k: v for k, v in base.items() if k != "rope_parameters"}
    legacy.update(rope_theta=500.0, partial_rotary_factor=0.5,
                  rope_scaling={"type": "su", "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]})
    assert families.from_hf(legacy) == families.from_hf(base)
    given = families.from_hf({**base, "rope_parameters": {**rope, "attention_factor": 1.25}})
    assert given.rope_attention_factor == 1.25
    assert families.from_hf({**base, "max_position_embeddings": 4}).rope_attention_factor == 1.0  # factor 1
