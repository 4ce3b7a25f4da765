"""DeBERTa (v1, v2, v3) against transformers' Deberta(V2)ForSequenceClassification.

Tiny random models (2 layers, d_model 32, 4 heads of 8) in four variants:
  * v3: its defaults: 256 position buckets, shared q/k projections for the relative terms,
    [p2c, c2p], LayerNorm on the relative table, no absolute positions;
  * v2: the convolution of block 0 (kernel 3, 2 groups), no buckets, own position projections
    (pos_key_proj / pos_query_proj), absolute positions, token types, a 24-wide embedding
    projected to 32;
  * buckets: 4 buckets over 12 relative positions, so the 9-token inputs are log-bucketed, c2p only;
  * v1 (model_type `deberta`): fused q/k/v with q_bias/v_bias, max_relative_positions 5 (< the
    input length: the table is clamped).
Every site is compared on a right-padded batch: the residual stream against HF `hidden_states`,
patterns against `attentions` (everywhere: a padded query attends uniformly, as in HF), block
internals against forward hooks on the HF modules, `head.hook_cls` against the ContextPooler's
output, and the logits. Tolerance 1e-5 in float32. Also: the log buckets against transformers'
own function, save -> transformers -> load round trips, a head-less base model and a fresh head,
strictness, refused options, interventions, head_only / prefixes / padding, SYNAPSE's [CLS]
features.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import apex_jax
from apex_jax.interventions import Add, Noise
from apex_jax.models import deberta
from tests.helpers import max_err, write_hf_folder
from tests.helpers.hf_parity import block_hooks, capture, full_forward, random_model, split_heads

TOL = 1e-5
VOCAB, N_HEADS, D, D_HEAD, POS = 97, 4, 32, 8, 9
# name -> (model_type, HF config options)
VARIANTS = {
    "v3": ("deberta-v2", dict(relative_attention=True, position_buckets=256, share_att_key=True,
                              pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", position_biased_input=False)),
    "v2": ("deberta-v2", dict(relative_attention=True, pos_att_type="p2c|c2p", conv_kernel_size=3, conv_groups=2,
                              type_vocab_size=2, embedding_size=24)),
    "buckets": ("deberta-v2", dict(relative_attention=True, position_buckets=4, max_relative_positions=12,
                                   pos_att_type=["c2p"], position_biased_input=False)),
    "v1": ("deberta", dict(relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=5,
                           position_biased_input=False)),
}
# Block internals: (HF submodule of the layer, "in"/"out"); q/k/v are added per model type.
HF_SITES = {
    "attn.hook_z": ("attention.output.dense", "in"),
    "hook_attn_out": ("attention.output.dense", "out"),
    "hook_resid_mid": ("attention.output.LayerNorm", "out"),
    "mlp.hook_pre": ("intermediate.dense", "out"),
    "mlp.hook_post": ("output.dense", "in"),
    "hook_mlp_out": ("output.dense", "out"),
}
V2_QKV = {"attn.hook_q": ("attention.self.query_proj", "out"), "attn.hook_k": ("attention.self.key_proj", "out"),
          "attn.hook_v": ("attention.self.value_proj", "out")}


def hf_config(variant: str, n_labels: int = 3, **changes):
    import transformers as T

    model_type, options = VARIANTS[variant]
    cls = T.DebertaV2Config if model_type == "deberta-v2" else T.DebertaConfig
    return cls(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=N_HEADS,
               intermediate_size=48, max_position_embeddings=40, num_labels=n_labels, **{**options, **changes})


def make_model(variant: str, folder, head: bool = True, seed: int = 0):
    """Random HF DeBERTa (weights moved off their init so norms and biases matter), saved."""
    import transformers as T

    v2 = VARIANTS[variant][0] == "deberta-v2"
    if head:
        cls = T.DebertaV2ForSequenceClassification if v2 else T.DebertaForSequenceClassification
    else:
        cls = T.DebertaV2Model if v2 else T.DebertaModel
    return random_model(lambda: cls(hf_config(variant)), folder, seed)


def make_inputs(variant: str, batch: int = 3, pos: int = POS) -> dict[str, np.ndarray]:
    """A right-padded batch (pad id 0): example i has pos - 2*i real tokens."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, size=(batch, pos)).astype(np.int32)
    mask = (np.arange(pos)[None] < (pos - 2 * np.arange(batch))[:, None]).astype(np.int32)
    out = {"input_ids": ids * mask, "attention_mask": mask}
    if VARIANTS[variant][1].get("type_vocab_size"):
        out["token_type_ids"] = (np.arange(pos)[None] >= pos // 2).astype(np.int32).repeat(batch, 0) * mask
    return out


@dataclasses.dataclass
class Ref:
    variant: str
    folder: object
    hf: object
    model: object
    inputs: dict
    _runs: dict = dataclasses.field(default_factory=dict)

    @property
    def clean(self):
        """The clean logits (computed once: eager forwards cost seconds on 2 cores)."""
        if "clean" not in self._runs:
            self._runs["clean"] = self.model.apply(self.model.params, self.inputs).logits
        return self._runs["clean"]

    @property
    def every_site(self):
        """The clean forward capturing every site (computed once)."""
        if "all" not in self._runs:
            self._runs["all"] = self.model.apply(self.model.params, self.inputs, capture=self.model.sites)
        return self._runs["all"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    cache: dict = {}

    def get(variant: str) -> Ref:
        if variant not in cache:
            folder = tmp_path_factory.mktemp(f"deberta-{variant}")
            hf = make_model(variant, folder)
            cache[variant] = Ref(variant, folder, hf, apex_jax.load(folder), make_inputs(variant))
        return cache[variant]

    return get


def hf_sites(r: Ref):
    """(HF outputs, block internals in apex-jax layouts, the pooler output) from forward hooks.

    Only a module's first call is kept: with share_att_key the q/k projections run again on the
    relative table."""
    v1 = r.model.config.arch == "deberta"
    sites = {**HF_SITES, **({"attn.hook_qkv": ("attention.self.in_proj", "out")} if v1 else V2_QKV)}
    hooks = {**block_hooks(r.hf.deberta.encoder.layer, sites), "head.hook_cls": (r.hf.pooler, "out")}
    out, found = capture(hooks, lambda: full_forward(r.hf, r.inputs), keep_first=True)
    internal = {}
    for site, v in split_heads(found, N_HEADS, D_HEAD).items():
        b, p = v.shape[:2]
        if site.endswith("hook_qkv"):  # HF: view [b, p, heads, 3 * d_head], chunk; then the biases
            attn = r.hf.deberta.encoder.layer[int(site.split(".")[1])].attention.self
            q, k, v_ = np.split(v.reshape(b, p, N_HEADS, 3 * D_HEAD), 3, axis=-1)
            stem = site[: -len("hook_qkv")]
            internal[f"{stem}hook_q"] = q + attn.q_bias.detach().numpy().reshape(N_HEADS, D_HEAD)
            internal[f"{stem}hook_k"] = k
            internal[f"{stem}hook_v"] = v_ + attn.v_bias.detach().numpy().reshape(N_HEADS, D_HEAD)
        else:
            internal[site] = v
    return out, internal


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_every_site(ref, variant):
    r = ref(variant)
    model, mask = r.model, r.inputs["attention_mask"]
    cfg = model.config
    assert cfg.arch == VARIANTS[variant][0] and (mask == 0).any()
    assert cfg.scale_factor == 1 + len(deberta._listed(VARIANTS[variant][1]["pos_att_type"], ""))
    out = r.every_site
    assert set(out.captured) == set(model.sites)
    ref_out, internal = hf_sites(r)
    errs = {"hook_embed": max_err(out.captured["hook_embed"], ref_out.hidden_states[0], mask)}
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        errs[f"{b}.hook_resid_pre"] = max_err(out.captured[f"{b}.hook_resid_pre"], ref_out.hidden_states[i], mask)
        errs[f"{b}.hook_resid_post"] = max_err(out.captured[f"{b}.hook_resid_post"], ref_out.hidden_states[i + 1], mask)
        errs[f"{b}.attn.hook_pattern"] = max_err(out.captured[f"{b}.attn.hook_pattern"], ref_out.attentions[i])
        for local in ("attn.hook_q", "attn.hook_k", "attn.hook_v", *HF_SITES):
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], internal["head.hook_cls"])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], ref_out.logits)
    errs["logits"] = max_err(out.logits, ref_out.logits)
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= TOL}
    assert not bad, f"{variant}: sites off the HF reference by more than {TOL}: {bad}"
    assert np.asarray(out.logits).std() > 1e-3
    # HF zeroes padded positions of the embedding (and of block 0's output after the convolution)
    assert np.all(np.asarray(out.captured["hook_embed"])[mask == 0] == 0)


def test_log_buckets_match_transformers():
    """The bucketed relative positions equal transformers' for v3's (256, 512) far past 512 tokens
    and for the small config, and the whole [query, key] table of a 600-token input."""
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position, make_log_bucket_position

    rel = np.arange(-2048, 2049)
    for buckets, max_pos in ((256, 512), (4, 12), (64, 128)):
        theirs = make_log_bucket_position(torch.from_numpy(rel), buckets, max_pos).long().numpy()
        np.testing.assert_array_equal(deberta.log_buckets(rel, buckets, max_pos), theirs)
    v3 = deberta.from_hf({**hf_config("v3").to_dict(), "max_position_embeddings": 512})
    assert (v3.position_buckets, v3.max_relative_positions, v3.rel_table_size) == (256, 512, 512)
    x = torch.zeros(1, 600, 1)
    theirs = build_relative_position(x, x, bucket_size=256, max_position=512)[0].numpy()
    ours = deberta.relative_positions(v3, 600)
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours)) < 2 * 600 - 1  # bucketed: fewer distinct values than offsets


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_round_trip_through_transformers(ref, tmp_path, variant):
    import transformers as T
    from safetensors.numpy import load_file

    r = ref(variant)
    model = r.model
    folder = model.save(tmp_path / "saved")
    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(r.folder / "model.safetensors")))
    arch = json.loads((folder / "config.json").read_text())["architectures"]
    assert arch == [deberta.HF_CLASS[model.config.arch]]
    hf, info = T.AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    logits = full_forward(hf.eval(), r.inputs).logits.numpy()
    assert max_err(logits, full_forward(r.hf, r.inputs).logits.numpy()) < TOL  # the same HF model
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))


def test_headless_base_model_and_fresh_head(tmp_path):
    """A DebertaV2Model folder (with a DeBERTa-v2 tokenizer) loads head-less: `encode` gives a
    right-padded [CLS] ... [SEP] batch and the last hidden state is HF's; num_labels gives a fresh
    ContextPooler + classifier, and the saved folder is a classifier transformers loads with no
    missing key and the same logits."""
    import transformers as T

    hf = make_model("v3", tmp_path / "base", head=False)
    words = "a fine film , dull and far too long".split()
    vocab = [(t, 0.0) for t in ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")] + [(f"▁{w}", -1.0) for w in words]
    T.DebertaV2Tokenizer(vocab=vocab).save_pretrained(str(tmp_path / "base"))
    m = apex_jax.load(tmp_path / "base")
    assert m.config.n_classes is None and "head.hook_cls" not in m.sites
    inputs = m.encode(["a fine film , and far long", "dull", "a dull film"])
    assert inputs["input_ids"].shape == (3, POS) and "token_type_ids" not in inputs
    assert (inputs["input_ids"][:, 0] == 1).all() and inputs["input_ids"][1].tolist() == [1, 9, 2] + [0] * 6
    out = m.apply(m.params, inputs, capture=("blocks.1.hook_resid_post",))
    assert out.logits is None
    assert max_err(out.captured["blocks.1.hook_resid_post"], full_forward(hf, inputs).last_hidden_state,
                   inputs["attention_mask"]) < TOL
    fresh = apex_jax.load(tmp_path / "base", num_labels=2, seed=3)
    assert fresh.config.n_classes == 2 and set(fresh.params["head"]) == {"pooler", "classifier"}
    folder = fresh.save(tmp_path / "fresh")
    clf, info = T.AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert max_err(fresh.apply(fresh.params, inputs).logits, full_forward(clf.eval(), inputs).logits) < TOL



def test_strict_conversion_names_the_weight(ref, tmp_path):
    from safetensors.numpy import load_file

    r = ref("v2")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = json.loads((r.folder / "config.json").read_text())
    key = "deberta.encoder.layer.1.attention.self.pos_key_proj.weight"
    with pytest.raises(ValueError, match=r"missing weights: \['encoder\.layer\.1\.attention\.self\.pos_key_proj\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['lm_predictions\.lm_head\.bias'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, {**state, "lm_predictions.lm_head.bias": np.zeros(3, np.float32)}))
    conv = "deberta.encoder.conv.conv.weight"
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['encoder\.conv\.conv\.weight: \(32, 32, 3\), expected \(32, 16, 3\)"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, {**state, conv: np.zeros((D, D, 3), np.float32)}))


@pytest.mark.parametrize("change, match", [
    (dict(talking_head=True, model_type="deberta"), "talking_head"),
    (dict(pos_att_type="c2p|p2p"), r"unsupported pos_att_type \['c2p', 'p2p'\]"),
    (dict(pos_att_type=["c2p", "c2p"]), "at most once"),
    (dict(norm_rel_ebd="layer_norm|scale"), r"unsupported norm_rel_ebd \['layer_norm', 'scale'\]; supported: none, layer_norm"),
    (dict(norm_rel_ebd="layer_norm", relative_attention=False), "norm_rel_ebd 'layer_norm' without relative_attention"),
    (dict(conv_kernel_size=4), "conv_kernel_size 4 is even"),
    (dict(conv_kernel_size=3, conv_groups=5), "conv_groups 5 does not divide hidden_size 32"),
    (dict(conv_kernel_size=3, conv_act="mish"), "unsupported conv_act 'mish'"),
    (dict(pooler_hidden_size=16), "pooler_hidden_size 16 differs from hidden_size 32"),
    (dict(pooler_hidden_act="mish"), "unsupported pooler_hidden_act 'mish'"),
    (dict(attention_head_size=4), "attention_head_size 4 is not supported"),
    (dict(position_buckets=1), "position_buckets 1 with max_relative_positions 40"),
    (dict(model_type="deberta-v3"), r"unsupported model_type 'deberta-v3'; supported: .*deberta, deberta-v2"),
])
def test_unsupported_options_are_refused(change, match):
    base = hf_config("v3").to_dict()
    with pytest.raises(ValueError, match=match):
        apex_jax.create({**base, **change}, num_labels=2)


@pytest.mark.parametrize("variant, change", [
    ("v3", dict(relative_attention=False)),  # the content score alone (the same scale factor)
    ("v2", dict(conv_kernel_size=0)),
])
def test_options_matter(ref, variant, change):
    """Not vacuous: the relative terms and the convolution each move the logits well past the
    tolerance."""
    r = ref(variant)
    other = apex_jax.Model(dataclasses.replace(r.model.config, **change), r.model.params, r.model.hf_config)
    assert max_err(r.clean, other.apply(other.params, r.inputs).logits) > 10 * TOL


def test_noise_intervention(ref):
    """Noise at one site (every block's hook_k) moves the logits; at sigma = 0 it is the identity:
    the clean logits exactly (noise at every block keeps the clean run's one scan over the blocks;
    noise at one block alone would split it, which rounds differently: see test_interventions)."""
    r = ref("v3")
    m = r.model
    clean = r.clean
    sites = ("blocks.0.attn.hook_k", "blocks.1.attn.hook_k")  # keys feed the content and the p2c term
    noisy = m.apply(m.params, r.inputs, {s: Noise(jax.random.key(0), 0.5) for s in sites}).logits
    assert max_err(noisy, clean) > 1e-3
    zero = m.apply(m.params, r.inputs, {s: Noise(jax.random.key(0), 0.0) for s in sites}).logits
    np.testing.assert_array_equal(np.asarray(zero), np.asarray(clean))


def test_head_only_prefix_and_padding(ref):
    """v2: head_only and a cached prefix give the full run's logits (the convolution runs in the
    prefix, the relative table is rebuilt by the suffix); values added at padded positions never
    reach the real tokens (the convolution reads neighbours). v1's head_only is SYNAPSE's below."""
    r = ref("v2")
    m, inputs = r.model, r.inputs
    site = "blocks.1.hook_resid_mid"
    fast = m.apply(m.params, inputs, capture=(site,), head_only=True)
    assert max_err(fast.logits, r.clean) < TOL
    assert max_err(fast.captured[site][:, 0], np.asarray(r.every_site.captured[site])[:, 0]) < TOL
    pert = {"blocks.1.hook_resid_pre": Noise(jax.random.key(1), 0.3)}
    prefix = m.prefix(m.params, inputs, until=list(pert))
    assert prefix.start == 1
    assert max_err(m.apply(m.params, prefix, pert).logits, m.apply(m.params, inputs, pert).logits) < TOL
    n = inputs["attention_mask"].sum(1)
    assert n.min() < POS
    pads = np.arange(POS)[None, :] >= n[:, None]  # [batch, pos]
    junk = {"blocks.0.hook_resid_pre": Add(jnp.asarray(5.0 * pads[..., None], jnp.float32))}
    out_site = "blocks.1.hook_resid_post"
    moved = m.apply(m.params, inputs, junk, capture=(out_site,))
    assert max_err(moved.captured[out_site], r.every_site.captured[out_site], inputs["attention_mask"]) < TOL
    assert max_err(moved.logits, r.clean) < TOL


def test_synapse_cls_features(ref):
    """SYNAPSE's per-layer [CLS] features (extract_cls: head_only, so v1's last block computes the
    fused projection's [CLS] query only) are HF's hidden_states[i][:, 0] for every layer, and
    head.hook_cls the ContextPooler's output."""
    r = ref("v1")
    sites = ("hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "head.hook_cls")
    feats = apex_jax.extract_cls(r.model, r.model.params, r.inputs, sites=sites, batch_size=4, progress=False)
    ref_out, internal = hf_sites(r)
    theirs = [ref_out.hidden_states[i].numpy()[:, 0] for i in range(3)] + [internal["head.hook_cls"]]
    errs = {s: max_err(feats[s], t) for s, t in zip(sites, theirs)}
    assert all(e < TOL for e in errs.values()) and feats["head.hook_cls"].shape == (3, D), errs
