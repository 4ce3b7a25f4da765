"""ModernBERT against transformers' ModernBertForSequenceClassification.

Two tiny random models (d_model 32, 4 heads of 8, d_mlp 24), each with a local window shorter
than the 10-token padded batch so the window mask matters:

  * "cls": 3 layers from `global_attn_every_n_layers=3` (global, local, local: blocks 1 and 2
    run as one scan), [CLS] pooling, no biases (the defaults), window 2;
  * "mean": 2 layers from `layer_types` (local, global: block 0 is local, block 1 global with
    its attention norm), mean pooling, every bias on (norms, attention, MLP, head dense),
    gelu_pytorch_tanh MLP and a silu head, window 3.

Every site is compared on a right-padded batch against HF's eager attention: hidden states at
real tokens (HF does not define padded ones), patterns everywhere, block internals from forward
hooks (q/k/v from the fused Wqkv output viewed as [3, heads, d_head], the GLU's `input` half as
`mlp.hook_pre`), `ln_final.hook_normalized` against `last_hidden_state`, `head.hook_cls` against
HF's prediction head output and the logits. Tolerance 1e-5 in float32. HF's sdpa attention is
compared too (at real tokens). Also: save -> transformers -> load, strictness, refused options,
head_only and prefixes, a masked-LM checkpoint with a fresh classifier, a Noise intervention
(σ = 0 bitwise clean), and SYNAPSE's per-layer [CLS] features. Few compiled forwards (about 7):
the file stays within a minute of CPU.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import apex_jax
from apex_jax.interventions import Noise
from apex_jax.models import families
from apex_jax.models.common import STACKED, stack_blocks
from apex_jax.models.model import jit_apply
from tests.helpers import max_err, write_hf_folder
from tests.helpers.hf_parity import block_hooks, capture, full_forward, random_model, split_heads, torch_forward

TOL = 1e-5
VOCAB, PAD, N_HEADS, D, D_HEAD, D_MLP = 97, 0, 4, 32, 8, 24
G, L = "full_attention", "sliding_attention"
VARIANTS = {
    "cls": dict(num_hidden_layers=3, global_attn_every_n_layers=3, local_attention=4, global_rope_theta=1000.0,
                local_rope_theta=50.0),
    "mean": dict(num_hidden_layers=2, layer_types=[L, G], local_attention=6, global_rope_theta=200.0,
                 local_rope_theta=20.0, classifier_pooling="mean", norm_bias=True, attention_bias=True,
                 mlp_bias=True, classifier_bias=True, hidden_activation="gelu_pytorch_tanh",
                 classifier_activation="silu"),
}
# Block internals: (HF submodule of ModernBertEncoderLayer, "in"/"out").
HF_SITES = {
    "attn.hook_qkv": ("attn.Wqkv", "out"),
    "attn.hook_z": ("attn.Wo", "in"),
    "hook_attn_out": ("attn.Wo", "out"),
    "hook_resid_mid": ("mlp_norm", "in"),
    "mlp.hook_wi": ("mlp.Wi", "out"),
    "mlp.hook_post": ("mlp.Wo", "in"),
    "hook_mlp_out": ("mlp.Wo", "out"),
    "hook_resid_pre": ("", "in"),
    "hook_resid_post": ("", "out"),
}


def hf_config(variant: str, n_labels: int = 3, **change):
    import transformers as T

    kw = {**VARIANTS[variant], **change}
    return T.ModernBertConfig(
        vocab_size=VOCAB, hidden_size=D, intermediate_size=D_MLP, num_attention_heads=N_HEADS,
        max_position_embeddings=64, pad_token_id=PAD, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2, num_labels=n_labels, **kw)


def make_inputs(batch: int = 3, pos: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded: example i has pos - 3*i real tokens (10, 7, 4), ids never the pad id."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, pos), PAD, np.int32)
    mask = np.zeros((batch, pos), np.int32)
    for i in range(batch):
        n = pos - 3 * i
        ids[i, :n], mask[i, :n] = rng.integers(3, VOCAB, size=n), 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclasses.dataclass
class Ref:
    variant: str
    folder: object
    hf: object
    model: object
    inputs: dict
    out: object  # our Output with every site captured


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    import transformers as T

    cache: dict = {}

    def get(variant: str) -> Ref:
        if variant not in cache:
            folder = tmp_path_factory.mktemp(f"modernbert-{variant}")
            hf = random_model(lambda: T.ModernBertForSequenceClassification(hf_config(variant)), folder, eager=True)
            model, inputs = apex_jax.load(folder), make_inputs()
            out = jit_apply(model.config, model.params, inputs, capture=model.sites)
            cache[variant] = Ref(variant, folder, hf, model, inputs, out)
        return cache[variant]

    return get


def hf_sites(r: Ref):
    """(HF outputs, every site of HF's forward in apex-jax layouts), via forward hooks."""
    hooks = {**block_hooks(r.hf.model.layers, HF_SITES), "head.hook_cls": (r.hf.head, "out")}
    out, found = capture(hooks, lambda: full_forward(r.hf, r.inputs))
    sites = {}
    for site, v in split_heads(found, N_HEADS, D_HEAD, kinds=("z",)).items():
        b, p = v.shape[:2]
        stem = site.rsplit(".", 1)[0]
        if site.endswith("hook_qkv"):  # HF: view [b, p, 3, heads, d_head], unbind the 3
            qkv = v.reshape(b, p, 3, N_HEADS, D_HEAD)
            sites.update({f"{stem}.hook_{n}": qkv[:, :, j] for j, n in enumerate("qkv")})
        elif site.endswith("hook_wi"):  # [input | gate]: the activation reads `input`
            sites[f"{stem}.hook_pre"] = v[..., :D_MLP]
        else:
            sites[site] = v
    return out, sites


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_every_site(ref, variant):
    r = ref(variant)
    model, out, mask = r.model, r.out, r.inputs["attention_mask"]
    cfg = model.config
    assert (cfg.arch, cfg.pooling, cfg.window) == ("modernbert", variant, 2 if variant == "cls" else 3)
    assert cfg.layer_types == ((G, L, L) if variant == "cls" else (L, G))
    assert (mask == 0).any() and mask.shape[1] > 2 * cfg.window + 1  # padded, longer than a window
    assert set(out.captured) == set(model.sites)
    ref_out, internal = hf_sites(r)
    n = cfg.n_layers
    errs = {"hook_embed": max_err(out.captured["hook_embed"], ref_out.hidden_states[0], mask)}
    for i in range(n):
        b = f"blocks.{i}"
        errs[f"{b}.attn.hook_pattern"] = max_err(out.captured[f"{b}.attn.hook_pattern"], ref_out.attentions[i])
        for local in ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out",
                      "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"):
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
        assert max_err(out.captured[f"{b}.hook_resid_pre"], ref_out.hidden_states[i], mask) <= TOL
    # HF's last hidden state is after the final norm (its last_hidden_state)
    errs["ln_final.hook_normalized"] = max_err(out.captured["ln_final.hook_normalized"], ref_out.hidden_states[n], mask)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], internal["head.hook_cls"])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], ref_out.logits)
    errs["logits"] = max_err(out.logits, ref_out.logits)
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= TOL}
    assert not bad, f"{variant}: sites off the HF reference by more than {TOL}: {bad}"
    assert np.asarray(out.logits).std() > 1e-3 and out.logits.shape == (3, 3)
    # the local window really cuts: a local layer's pattern is 0 beyond it at real tokens
    local = cfg.layer_types.index(L)
    far = np.abs(np.arange(10)[:, None] - np.arange(10)[None]) > cfg.window
    assert (np.asarray(out.captured[f"blocks.{local}.attn.hook_pattern"])[0][:, far] == 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdpa_attention_agrees(ref, variant):
    """HF's sdpa attention (boolean masks) gives the eager values at real tokens and the same
    logits: the padded eager path is the reference for both."""
    import transformers as T

    r = ref(variant)
    sdpa = T.AutoModelForSequenceClassification.from_pretrained(str(r.folder), attn_implementation="sdpa").eval()
    assert sdpa.config._attn_implementation == "sdpa"
    got = torch_forward(sdpa, r.inputs, output_hidden_states=True)
    mask = r.inputs["attention_mask"]
    assert max_err(r.out.logits, got.logits) <= TOL
    assert max_err(r.out.captured["ln_final.hook_normalized"], got.hidden_states[-1], mask) <= TOL


def test_options_matter(ref):
    """Not vacuous: on these inputs HF's own logits move well past the tolerance when the window
    is wider than the batch, the two rope thetas are swapped, or the pooling changes."""
    import torch
    import transformers as T

    for variant in VARIANTS:
        r = ref(variant)
        base = torch_forward(r.hf, r.inputs).logits.numpy()
        v = VARIANTS[variant]
        pooling = "mean" if v.get("classifier_pooling", "cls") == "cls" else "cls"
        for change in (dict(local_attention=64), dict(global_rope_theta=v["local_rope_theta"],
                                                      local_rope_theta=v["global_rope_theta"]),
                       dict(classifier_pooling=pooling)):
            torch.manual_seed(0)
            other = T.ModernBertForSequenceClassification(hf_config(variant, **change))
            other.config._attn_implementation = "eager"
            other.load_state_dict(r.hf.state_dict())
            assert max_err(torch_forward(other.eval(), r.inputs).logits.numpy(), base) > 10 * TOL, (variant, change)


def test_noise_intervention_and_sigma0(ref):
    """Noise at one site moves the logits; σ = 0 gives bitwise the clean logits (one compiled
    function for both σ; block 0 runs unrolled with or without it, blocks 1-2 as one scan)."""
    r = ref("cls")
    m, site = r.model, "blocks.0.mlp.hook_post"

    def logits(sigma):
        pert = {site: Noise(jax.random.key(0), jnp.float32(sigma))}
        return np.asarray(jit_apply(m.config, m.params, r.inputs, pert, capture=m.sites).logits)

    np.testing.assert_array_equal(logits(0.0), np.asarray(r.out.logits))
    assert max_err(logits(0.5), r.out.logits) > 1e-3
    # the sweep engine stacks blocks of one structure only: block 0 has no attention norm
    assert STACKED not in stack_blocks(m.params, m.config.n_layers)


def test_synapse_cls_features_per_layer(ref):
    """SYNAPSE's per-layer [CLS] features (`extract_cls`, which runs head_only: the last block at
    [CLS] only) are position 0 of the embedding and of every block's output, HF's hidden states
    before the final norm."""
    from apex_jax.synapse.features import default_sites, extract_cls

    r = ref("cls")
    m = r.model
    feats = extract_cls(m, m.params, r.inputs, batch_size=3, progress=False)
    n = m.config.n_layers
    assert tuple(feats) == default_sites(m) == ("hook_embed",) + tuple(f"blocks.{i}.hook_resid_post" for i in range(n))
    _, internal = hf_sites(r)
    for i in range(n):
        assert max_err(feats[f"blocks.{i}.hook_resid_post"], internal[f"blocks.{i}.hook_resid_post"][:, 0]) < TOL
    assert max_err(feats["hook_embed"], internal["blocks.0.hook_resid_pre"][:, 0]) < TOL


def test_head_only_and_prefix(ref):
    """A cached prefix and a head_only suffix (the last block at [CLS] only) give the full run's
    logits under [CLS] pooling; under mean pooling head_only runs the last block in full."""
    r = ref("cls")
    m, x, n = r.model, r.inputs, r.model.config.n_layers
    pert = {f"blocks.{n - 1}.attn.hook_v": Noise(jax.random.key(1), jnp.float32(0.3))}
    prefix = jax.jit(lambda p, x: m.prefix(p, x, until=list(pert)))(m.params, x)
    assert prefix.start == n - 1
    whole = jit_apply(m.config, m.params, x, pert).logits
    assert max_err(jit_apply(m.config, m.params, prefix, pert, head_only=True).logits, whole) < TOL
    assert max_err(whole, r.out.logits) > 1e-3
    r = ref("mean")
    m = r.model
    assert max_err(jit_apply(m.config, m.params, r.inputs, head_only=True).logits, r.out.logits) < TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_round_trip_through_transformers(ref, tmp_path, variant):
    import transformers as T
    from safetensors.numpy import load_file

    r = ref(variant)
    model = r.model
    folder = model.save(tmp_path / "saved")
    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(r.folder / "model.safetensors")))
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["ModernBertForSequenceClassification"]
    hf, info = T.AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager",
                                                                    output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert max_err(r.out.logits, torch_forward(hf.eval(), r.inputs).logits.numpy()) < TOL
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))


def test_masked_lm_checkpoint_gets_a_fresh_classifier(ref, tmp_path):
    """num_labels on a ModernBertForMaskedLM folder: the prediction head (dense, norm) is the
    checkpoint's, as AutoModelForSequenceClassification keeps it; only the classifier is new;
    the LM decoder must be dropped on purpose."""
    import transformers as T

    random_model(lambda: T.ModernBertForMaskedLM(hf_config("cls")), tmp_path / "mlm", seed=1)
    with pytest.raises(ValueError, match=r"unused weights: \['decoder\.bias'\]"):
        apex_jax.load(tmp_path / "mlm", num_labels=3)
    m = apex_jax.load(tmp_path / "mlm", num_labels=3, ignore=["decoder.*"])
    hf = T.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "mlm"), num_labels=3,
                                                             attn_implementation="eager").eval()
    assert m.config == ref("cls").model.config  # one compiled forward serves both
    _, want = capture({"cls": (hf.head, "out")}, lambda: torch_forward(hf, make_inputs()))
    got = jit_apply(m.config, m.params, make_inputs(), capture=tuple(m.sites)).captured["head.hook_cls"]
    assert max_err(got, want["cls"]) < TOL



def test_strict_conversion_names_the_weight(ref, tmp_path):
    from safetensors.numpy import load_file

    r = ref("cls")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = json.loads((r.folder / "config.json").read_text())
    key = "model.layers.1.attn.Wqkv.weight"
    with pytest.raises(ValueError, match=r"missing weights: \['layers\.1\.attn\.Wqkv\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['layers\.0\.attn_norm\.weight'\]"):
        extra = {**state, "model.layers.0.attn_norm.weight": np.ones(D, np.float32)}  # block 0 has none
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, extra))
    wi = {**state, "model.layers.1.mlp.Wi.weight": np.zeros((D_MLP, D), np.float32)}  # one half of [input | gate]
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['layers\.1\.mlp\.Wi\.weight: \(24, 32\), expected \(48, 32\)"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, wi))


def test_config_spellings_and_refused_options(ref):
    base = json.loads((ref("cls").folder / "config.json").read_text())
    cfg = families.from_hf(base)
    # transformers 4.x's spelling: no layer_types / rope_parameters, the thetas and the period instead
    old = {k: v for k, v in base.items() if k not in ("layer_types", "rope_parameters")}
    old.update(global_attn_every_n_layers=3, global_rope_theta=1000.0, local_rope_theta=50.0)
    assert families.from_hf(old) == cfg
    assert families.from_hf({**old, "local_rope_theta": None}).local_rope_theta == 1000.0  # the global one
    refused = {
        "rope type 'linear'": {"rope_parameters": {G: {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e3},
                                                   L: {"rope_type": "default", "rope_theta": 50.0}}},
        "rope_scaling": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
        "classifier_pooling 'max'": {"classifier_pooling": "max"},
        "hidden_activation 'gelu_new2'": {"hidden_activation": "gelu_new2"},
        "classifier_activation 'tanhh'": {"classifier_activation": "tanhh"},
        "head_dim 16 differs": {"head_dim": 16},
        "layer_types must give": {"layer_types": [G, "chunked_attention", L]},
    }
    for message, change in refused.items():
        with pytest.raises(ValueError, match=message):
            families.from_hf({**base, **change})
    with pytest.raises(KeyError, match="intermediate_size"):
        families.from_hf({k: v for k, v in base.items() if k != "intermediate_size"})
