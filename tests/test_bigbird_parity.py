"""BigBird against transformers' BigBirdForSequenceClassification (eval mode).

Two tiny random models (2 layers, d_model 24, 3 heads of 8, block_size 2, num_random_blocks 1),
so short batches reach both regimes: transformers runs block-sparse attention when the padded
input length exceeds (5 + 2 * 1) * 2 = 14 tokens and full attention otherwise. The sparse batch
has 23 positions (transformers pads it to 24 = 12 blocks inside; we pad q/k/v only), the full
batch exactly 14 (the boundary); the full-regime model also computes the other options
(rescale_embeddings, use_bias=false, hidden_act relu). Every site is compared on right-padded
batches: the residual stream against HF `hidden_states` (cropped: transformers returns them at
the block-padded length), block internals against forward hooks on the HF modules, patterns
against the attention modules' weights, `head.hook_cls` against the input of
`classifier.out_proj`, and the logits. Tolerance 1e-5 in float32. transformers switches a model
to full attention for good the first time it sees a short batch, so each regime has its own.

Under block-sparse our dense pattern holds, at key block 0, the summed weight of the block's
copies (it is also every random block in eval mode); transformers' scatter keeps one copy there,
so those entries of HF's are multiplied by 1 + num_random_blocks before comparing (at real
queries; the rest of the pattern as it is).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import apex_jax
from apex_jax.interventions import Noise
from apex_jax.models import bigbird
from tests.helpers import hf_parity, max_err, write_hf_folder
from tests.helpers.hf_parity import block_hooks, capture, random_model, split_heads

TOL = 1e-5
VOCAB, PAD = 61, 0
N_HEADS, D_HEAD, BLOCK, N_RANDOM = 3, 8, 2, 1
D = N_HEADS * D_HEAD
SPARSE_LEN, FULL_LEN = 23, 14  # (5 + 2 * N_RANDOM) * BLOCK = 14: the last length of full attention

# Block internals: (HF submodule of BigBirdLayer, "in"/"out").
HF_SITES = {
    "attn.hook_q": ("attention.self.query", "out"),
    "attn.hook_k": ("attention.self.key", "out"),
    "attn.hook_v": ("attention.self.value", "out"),
    "attn.hook_z": ("attention.output.dense", "in"),
    "hook_attn_out": ("attention.output.dense", "out"),
    "hook_resid_mid": ("attention.output.LayerNorm", "out"),
    "mlp.hook_pre": ("intermediate.dense", "out"),
    "mlp.hook_post": ("output.dense", "in"),
    "hook_mlp_out": ("output.dense", "out"),
}


def hf_config(**kw):
    import transformers as T

    base = dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=2, num_attention_heads=N_HEADS,
                intermediate_size=37, max_position_embeddings=64, block_size=BLOCK, num_random_blocks=N_RANDOM,
                attention_type="block_sparse", num_labels=3, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                sep_token_id=3)
    return T.BigBirdConfig(**{**base, **kw})


def make_hf(folder=None, seed: int = 0, headless: bool = False, **kw):
    """A random HF BigBird (weights moved off their init so norms and biases matter), saved to
    `folder` if given."""
    import transformers as T

    cls = T.BigBirdModel if headless else T.BigBirdForSequenceClassification
    return random_model(lambda: cls(hf_config(**kw)), folder, seed)


def make_inputs(length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """3 right-padded examples of length, length - 6 and length - 9 real tokens, two segments."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, size=(3, length)).astype(np.int32)
    mask = np.ones((3, length), np.int32)
    for i, n in enumerate((length, length - 6, length - 9)):
        ids[i, n:], mask[i, n:] = PAD, 0
    types = (np.arange(length)[None] >= length // 2).astype(np.int32).repeat(3, 0) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def torch_forward(hf, inputs):
    return hf_parity.torch_forward(hf, inputs, output_hidden_states=True)


# The full-regime model computes the other options: rescale_embeddings, no q/k/v biases
# (use_bias=false) and relu as hidden_act (the MLP's and the head's activation).
OPTIONS = {"sparse": {}, "full": dict(rescale_embeddings=True, use_bias=False, hidden_act="relu")}


@dataclasses.dataclass
class Ref:
    folder: dict  # regime -> HF folder
    model: dict  # regime -> apex_jax.Model
    hf: dict  # regime -> HF model (the full regime's one switched to full attention for good)
    inputs: dict  # regime -> batch
    logits: dict = dataclasses.field(default_factory=dict)  # regime -> our logits (test_parity_every_site)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    folders, models, hfs = {}, {}, {}
    for seed, (regime, options) in enumerate(OPTIONS.items()):
        folders[regime] = tmp_path_factory.mktemp(f"bigbird-{regime}")
        hfs[regime] = make_hf(folders[regime], seed=seed, **options)
        models[regime] = apex_jax.load(folders[regime])
    # what transformers does on its first short batch, done before any hook is registered (the
    # switch replaces the attention modules)
    hfs["full"].bert.set_attention_type("original_full")
    return Ref(folders, models, hfs, {"sparse": make_inputs(SPARSE_LEN), "full": make_inputs(FULL_LEN, seed=1)})


def our_logits(ref, regime: str) -> np.ndarray:
    """Our clean logits of a regime's batch (kept from the parity test, else computed)."""
    if regime not in ref.logits:
        m = ref.model[regime]
        ref.logits[regime] = np.asarray(m.forward(ref.inputs[regime]).logits)
    return ref.logits[regime]


def hf_sites(hf, inputs):
    """(HF output, block internals and patterns in apex-jax layouts, cropped to the input length)."""
    layers = hf.bert.encoder.layer
    hooks = {**block_hooks(layers, HF_SITES), "head.hook_cls": (hf.classifier.out_proj, "in"),
             **{f"blocks.{i}.attn.hook_pattern": (layer.attention.self, lambda args, out: out[1])  # (context, weights)
                for i, layer in enumerate(layers)}}
    out, found = capture(hooks, lambda: torch_forward(hf, inputs))
    n = inputs["input_ids"].shape[1]
    sites = {}
    for site, v in split_heads(found, N_HEADS, D_HEAD).items():
        if site.endswith("hook_pattern"):
            sites[site] = v[:, :, :n, :n]
        elif site.startswith("blocks."):
            sites[site] = v[:, :n]
        else:
            sites[site] = v
    return out, sites


def hf_block_sparse_pattern(pattern: np.ndarray) -> np.ndarray:
    """HF's block-sparse weights with key block 0 of query blocks 1 .. n-2 counted once per copy
    (module docstring): comparable with our dense pattern."""
    out = pattern.copy()
    nb = -(-pattern.shape[-1] // BLOCK)
    out[:, :, BLOCK : (nb - 1) * BLOCK, :BLOCK] *= 1 + N_RANDOM
    return out


@pytest.mark.parametrize("regime", ["sparse", "full"])
def test_parity_every_site(ref, regime):
    model, inputs = ref.model[regime], ref.inputs[regime]
    mask = inputs["attention_mask"]
    n = inputs["input_ids"].shape[1]
    cfg = model.config
    assert (cfg.arch, cfg.block_sparse_at(n)) == ("big_bird", regime == "sparse")
    assert (cfg.rescale_embeddings, cfg.qkv_bias, cfg.act) == ((False, True, "gelu_new") if regime == "sparse"
                                                               else (True, False, "relu"))
    assert (mask == 0).any()
    out = model.forward(inputs, capture=model.sites)  # jitted: one compile instead of many small ones
    assert set(out.captured) == set(model.sites)
    hf_out, internal = hf_sites(ref.hf[regime], inputs)
    assert ref.hf[regime].bert.attention_type == ("block_sparse" if regime == "sparse" else "original_full")
    if regime == "sparse":  # transformers ran on 24 positions and cropped only the last hidden state
        assert hf_out.hidden_states[0].shape[1] == n + 1
    hidden = [h.numpy()[:, :n] for h in hf_out.hidden_states]
    errs = {"hook_embed": max_err(out.captured["hook_embed"], hidden[0], mask)}
    rows = mask[:, None, :, None].repeat(N_HEADS, 1).repeat(n, 3).astype(bool)  # real query rows, [b, h, q, k]
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        errs[f"{b}.hook_resid_pre"] = max_err(out.captured[f"{b}.hook_resid_pre"], hidden[i], mask)
        errs[f"{b}.hook_resid_post"] = max_err(out.captured[f"{b}.hook_resid_post"], hidden[i + 1], mask)
        for local in HF_SITES:
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
        ours, theirs = np.asarray(out.captured[f"{b}.attn.hook_pattern"]), internal[f"{b}.attn.hook_pattern"]
        if regime == "sparse":
            theirs = hf_block_sparse_pattern(theirs)
            # the dense pattern is a distribution over keys at every real query, zero off the blocks
            assert np.abs(ours.sum(-1) - 1)[rows[..., 0]].max() < 1e-5
            assert (ours[(theirs == 0) & rows] == 0).all() and (ours[rows] == 0).mean() > 0.3
        errs[f"{b}.attn.hook_pattern"] = max_err(ours, theirs, rows)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], internal["head.hook_cls"])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], hf_out.logits.numpy())
    errs["logits"] = max_err(out.logits, hf_out.logits.numpy())
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= TOL}
    assert not bad, f"{regime}: sites off the HF reference by more than {TOL}: {bad}"
    assert np.asarray(out.logits).std() > 1e-3
    if regime == "sparse":  # padding queries give zeros (transformers multiplies by the query mask)
        assert np.abs(np.asarray(out.captured["blocks.0.attn.hook_z"])[mask == 0]).max() == 0
    ref.logits[regime] = np.asarray(out.logits)


def test_regime_and_random_blocks_matter(ref):
    """Not vacuous: full attention, or one more random block (two more copies of key block 0),
    moves the sparse batch's logits well past the tolerance; the regime boundary is
    transformers' (15 positions: block-sparse, 14: full)."""
    m, inputs = ref.model["sparse"], ref.inputs["sparse"]
    for change in (dict(attention_type="original_full"), dict(num_random_blocks=2)):
        other = apex_jax.Model(dataclasses.replace(m.config, **change), m.params, m.hf_config)
        assert other.config.block_sparse_at(SPARSE_LEN) == ("num_random_blocks" in change)  # 23 > (5 + 2·2)·2
        assert max_err(other.forward(inputs).logits, our_logits(ref, "sparse")) > 10 * TOL, change
    assert m.config.block_sparse_at(FULL_LEN + 1) and not m.config.block_sparse_at(FULL_LEN)
    assert bigbird.random_blocks(N_HEADS, 12, N_RANDOM).shape == (N_HEADS, 10, N_RANDOM)
    assert not bigbird.random_blocks(N_HEADS, 12, N_RANDOM).any()  # eval mode: all key block 0


def test_cls_features_per_layer(ref):
    """SYNAPSE's per-layer [CLS] features (`extract_cls`, whose forward runs the last block for
    [CLS] only: a global query block) are HF's hidden states at position 0, and its
    `head.hook_cls` is what HF's out_proj reads."""
    from apex_jax import extract_cls

    m, inputs = ref.model["sparse"], ref.inputs["sparse"]
    sites = ("hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "head.hook_cls")
    feats = extract_cls(m, m.params, inputs, sites=sites, batch_size=3, progress=False)
    hf_out, internal = hf_sites(ref.hf["sparse"], inputs)
    for i, site in enumerate(sites):
        theirs = internal[site] if site == "head.hook_cls" else hf_out.hidden_states[i].numpy()[:, 0]
        assert feats[site].shape == (3, D)
        assert max_err(feats[site], theirs) < TOL, site


@pytest.mark.parametrize("site", ["blocks.1.hook_resid_mid", "blocks.1.attn.hook_pattern"])
def test_noise(ref, site):
    """Block-sparse regime: Noise at a site changes the logits; at sigma 0 every key gives the
    same logits bit for bit, the clean ones to 1e-6 (another compiled program: XLA may round
    differently, see tests/test_interventions.py); noise on the pattern goes through the dense
    pattern. (Prefix caching is the encoder's, tested there: a BigBird block reads only its
    input's length, which a prefix keeps.)"""
    m, inputs = ref.model["sparse"], ref.inputs["sparse"]
    run = jax.jit(lambda key, sigma: m.apply(m.params, inputs, {site: Noise(key, sigma)}).logits)
    k0, k1 = jax.random.split(jax.random.key(0))
    noisy = np.asarray(run(k0, 0.5))
    assert max_err(noisy, our_logits(ref, "sparse")) > 1e-3
    at0 = np.asarray(run(k0, 0.0))
    np.testing.assert_array_equal(at0, np.asarray(run(k1, 0.0)))
    assert max_err(at0, our_logits(ref, "sparse")) < 1e-6


def test_save_round_trip_through_transformers(ref, tmp_path):
    import transformers as T
    from safetensors.numpy import load_file

    model = ref.model["full"]  # no q/k/v biases: the table leaves them out both ways
    folder = model.save(tmp_path / "saved")
    assert set(load_file(str(folder / "model.safetensors"))) == set(load_file(str(ref.folder["full"] / "model.safetensors")))
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BigBirdForSequenceClassification"]
    hf, info = T.AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert max_err(torch_forward(hf.eval(), ref.inputs["full"]).logits.numpy(), our_logits(ref, "full")) < TOL
    again = apex_jax.load(folder)
    assert again.config == model.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))


def test_base_model_gets_a_fresh_head(tmp_path):
    """A BigBirdModel folder (pooler, no classifier) with num_labels: a fresh head on the body;
    its save loads in transformers with no missing or unexpected key."""
    import transformers as T

    make_hf(tmp_path / "base", headless=True)
    m = apex_jax.load(tmp_path / "base", num_labels=2)
    assert (m.config.n_classes, m.config.has_pooler) == (2, True)
    assert m.params["head"]["classifier"]["kernel"].shape == (D, 2)
    _, info = T.AutoModelForSequenceClassification.from_pretrained(str(m.save(tmp_path / "saved")),
                                                                   output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info



def test_strict_conversion_and_refused_options(ref, tmp_path):
    from safetensors.numpy import load_file

    state = load_file(str(ref.folder["sparse"] / "model.safetensors"))
    cfg = json.loads((ref.folder["sparse"] / "config.json").read_text())
    key = "bert.encoder.layer.1.attention.self.key.bias"
    with pytest.raises(ValueError, match=r"missing weights: \['encoder\.layer\.1\.attention\.self\.key\.bias'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "missing", cfg, {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['extra\.weight'\]"):
        apex_jax.load(write_hf_folder(tmp_path, "unused", cfg, {**state, "extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['pooler\.weight"):
        apex_jax.load(write_hf_folder(tmp_path, "shape", cfg, {**state, "bert.pooler.weight": np.zeros((D, 3), np.float32)}))
    with pytest.raises(ValueError, match="unsupported BigBird attention_type 'sliding'; supported: block_sparse, original_full"):
        apex_jax.create({**cfg, "attention_type": "sliding"}, num_labels=2)
    with pytest.raises(ValueError, match=r"BigBird as a decoder \(is_decoder / add_cross_attention\) is not supported"):
        apex_jax.create({**cfg, "is_decoder": True}, num_labels=2)
    with pytest.raises(ValueError, match="unsupported activation 'mish'"):
        apex_jax.create({**cfg, "hidden_act": "mish"}, num_labels=2)
    with pytest.raises(ValueError, match="with block_sparse attention, num_random_blocks >= 1; got block_size 2, num_random_blocks 0"):
        apex_jax.create({**cfg, "num_random_blocks": 0}, num_labels=2)
