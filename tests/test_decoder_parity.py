"""Decoders (GPT-2, Llama, Qwen2, Mistral) against the Hugging Face PyTorch models (DESIGN.md, 9).

Tiny random models of each family (tests/helpers/hf_decoder_reference.py), as sequence classifiers and
as causal LMs, on a right-padded batch. Every site is compared: the residual stream against HF
`hidden_states` (the last one is after the final norm: `ln_final.hook_normalized`), patterns
against `attentions`, block internals against forward hooks on the HF modules, `head.hook_cls`
against the final hidden state at the last real token, and the logits (HF's causal-LM logits
read at that token). Real tokens only for per-token sites; tolerance 1e-5 in float32.
Also: left vs right padding, head_only, prefix + suffix, save -> transformers, strictness.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tests.helpers import max_err

import apex_jax
from apex_jax.interventions import Noise, Scale
from tests.helpers.hf_decoder_reference import FAMILIES, hf_config, make_inputs, make_model, to_left, torch_forward
from tests.helpers.hf_parity import block_hooks, capture, split_heads

TOL = 1e-5
HEADS = ("seq", "lm")

# Block-internal sites: (HF submodule of the decoder layer, "in"/"out"). GPT-2's q/k/v come from
# the fused c_attn output.
HF_SITES = {
    "gpt2": {
        "attn.hook_qkv": ("attn.c_attn", "out"),
        "attn.hook_z": ("attn.c_proj", "in"),
        "hook_attn_out": ("attn.c_proj", "out"),
        "hook_resid_mid": ("ln_2", "in"),
        "mlp.hook_pre": ("mlp.c_fc", "out"),
        "mlp.hook_post": ("mlp.c_proj", "in"),
        "hook_mlp_out": ("mlp.c_proj", "out"),
    },
    "llama": {
        "attn.hook_q": ("self_attn.q_proj", "out"),
        "attn.hook_k": ("self_attn.k_proj", "out"),
        "attn.hook_v": ("self_attn.v_proj", "out"),
        "attn.hook_z": ("self_attn.o_proj", "in"),
        "hook_attn_out": ("self_attn.o_proj", "out"),
        "hook_resid_mid": ("post_attention_layernorm", "in"),
        "mlp.hook_pre": ("mlp.gate_proj", "out"),
        "mlp.hook_post": ("mlp.down_proj", "in"),
        "hook_mlp_out": ("mlp.down_proj", "out"),
    },
}


@dataclasses.dataclass
class DRef:
    family: str
    head: str
    folder: object
    hf: object
    model: object
    inputs: dict
    _out: object = None

    @property
    def torch_out(self):
        if self._out is None:
            self._out = torch_forward(self.hf, self.inputs)
        return self._out

    @property
    def layers(self):
        base = self.hf.transformer if self.family == "gpt2" else self.hf.model
        return base.h if self.family == "gpt2" else base.layers


@pytest.fixture(scope="session")
def dref(tmp_path_factory):
    cache: dict = {}

    def get(family: str, head: str) -> DRef:
        if (family, head) not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-{head}")
            hf = make_model(family, head, folder)
            cache[family, head] = DRef(family, head, folder, hf, apex_jax.load(folder), make_inputs())
        return cache[family, head]

    return get


def hf_internal_sites(r: DRef) -> dict[str, np.ndarray]:
    """Block internals of the HF model via forward hooks, in apex-jax layouts."""
    cfg = r.model.config
    table = {**HF_SITES["gpt2" if r.family == "gpt2" else "llama"], "hook_resid_post": ("", "out")}
    _, found = capture(block_hooks(r.layers, table), lambda: torch_forward(r.hf, r.inputs))
    out = split_heads(found, cfg.n_heads, cfg.d_head, cfg.n_kv_heads)
    for site, v in found.items():
        if site.endswith("hook_qkv"):
            stem = site[: -len("hook_qkv")]
            for name, x in zip("qkv", np.split(v, 3, axis=-1)):
                out[f"{stem}hook_{name}"] = x.reshape(*v.shape[:2], cfg.n_heads, cfg.d_head)
            del out[site]
    return out


def check_parity(r: DRef, tol: float = TOL) -> dict[str, float]:
    """Every site and the logits of `r.model` against HF; returns the errors by site."""
    model, ref, mask = r.model, r.torch_out, r.inputs["attention_mask"]
    cfg = model.config
    out = model.apply(model.params, r.inputs, capture=model.sites)
    assert set(out.captured) == set(model.sites)
    n = cfg.n_layers
    cls = np.asarray(model.classifier_positions(r.inputs))
    np.testing.assert_array_equal(cls, mask.sum(1) - 1)  # right padding: the last real token
    rows = np.arange(len(cls))
    hf_logits = ref.logits.numpy()
    if hf_logits.ndim == 3:  # causal LM: next-token logits at every position; we read one
        hf_logits = hf_logits[rows, cls]
    internal = hf_internal_sites(r)
    errs = {"hook_embed": max_err(out.captured["hook_embed"], ref.hidden_states[0], mask)}
    for i in range(n):
        b = f"blocks.{i}"
        errs[f"{b}.hook_resid_pre"] = max_err(out.captured[f"{b}.hook_resid_pre"], ref.hidden_states[i], mask)
        # HF's attentions at real query rows (padded queries are undefined).
        pattern = np.asarray(out.captured[f"{b}.attn.hook_pattern"]).transpose(0, 2, 1, 3)
        errs[f"{b}.attn.hook_pattern"] = max_err(pattern, ref.attentions[i].numpy().transpose(0, 2, 1, 3), mask)
        for local in ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_attn_out",
                      "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"):
            errs[f"{b}.{local}"] = max_err(out.captured[f"{b}.{local}"], internal[f"{b}.{local}"], mask)
        if i < n - 1:  # HF's last hidden state is after the final norm
            assert max_err(out.captured[f"{b}.hook_resid_post"], ref.hidden_states[i + 1], mask) <= tol
    errs["ln_final.hook_normalized"] = max_err(out.captured["ln_final.hook_normalized"], ref.hidden_states[n], mask)
    errs["head.hook_cls"] = max_err(out.captured["head.hook_cls"], ref.hidden_states[n].numpy()[rows, cls])
    errs["head.hook_logits"] = max_err(out.captured["head.hook_logits"], hf_logits)
    errs["logits"] = max_err(out.logits, hf_logits)
    assert set(errs) == set(model.sites) | {"logits"}, "a site was not compared"
    bad = {s: e for s, e in errs.items() if not e <= tol}
    assert not bad, f"{r.family}/{r.head}: sites off the HF reference by more than {tol}: {bad}"
    assert np.asarray(out.logits).std() > 1e-3  # not vacuous
    return errs


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_parity_every_site(dref, family, head):
    r = dref(family, head)
    cfg = r.model.config
    assert cfg.lm_head == (head == "lm")
    assert cfg.n_classes == (97 if head == "lm" else 3)
    assert (r.inputs["attention_mask"] == 0).any()
    errs = check_parity(r)
    print(f"\n{family}/{head}: max |diff| {max(errs.values()):.2e} (worst {max(errs, key=errs.get)})")


def test_family_options_are_parsed(dref):
    """Each reference really exercises the option it is there for."""
    c = {f: dref(f, "seq").model.config for f in FAMILIES}
    assert (c["gpt2"].positions, c["gpt2"].norm_kind, c["gpt2"].act) == ("learned", "layernorm", "gelu_new")
    assert (c["llama"].n_heads, c["llama"].n_kv_heads, c["llama"].rope_type) == (4, 2, "llama3")
    assert not c["llama"].tie_embeddings and not c["llama"].qkv_bias
    lb = c["llama_bias"]
    assert (lb.rope_type, lb.d_head, lb.qkv_bias, lb.o_bias, lb.mlp_bias) == ("linear", 10, True, True, True)
    assert (c["qwen2"].qkv_bias, c["qwen2"].o_bias, c["qwen2"].n_kv_heads, c["qwen2"].rope_theta) == (True, False, 1, 1e6)
    assert (c["mistral"].sliding_window, c["mistral"].sliding_layers) == (4, (0, 1))


@pytest.mark.parametrize("family, change", [
    ("llama", dict(rope_scaling=())),  # llama3 scaling off
    ("llama_bias", dict(rope_scaling=())),  # linear scaling off
    ("qwen2", dict(rope_theta=10000.0)),
    ("mistral", dict(sliding_layers=())),  # no window
])
def test_options_matter(dref, family, change):
    """Not vacuous: without the option the model leaves the tolerance (so parity tested it)."""
    r = dref(family, "seq")
    other = apex_jax.Model(dataclasses.replace(r.model.config, **change), r.model.params, r.model.hf_config)
    a = r.model.apply(r.model.params, r.inputs).logits
    b = other.apply(other.params, r.inputs).logits
    assert max_err(a, b) > 10 * TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_agree(dref, family):
    r = dref(family, "seq")
    model, right = r.model, r.inputs
    left = to_left(right)
    assert not np.array_equal(left["attention_mask"], right["attention_mask"])
    sites = ("blocks.0.hook_resid_post", "ln_final.hook_normalized", "head.hook_cls")
    a = model.apply(model.params, right, capture=sites)
    b = model.apply(model.params, left, capture=sites)
    assert max_err(a.logits, b.logits) < TOL
    assert max_err(a.captured["head.hook_cls"], b.captured["head.hook_cls"]) < TOL
    cl = np.asarray(model.classifier_positions(left))
    np.testing.assert_array_equal(cl, right["input_ids"].shape[1] - 1)
    for s in sites[:2]:
        x, y = np.asarray(a.captured[s]), np.asarray(b.captured[s])
        for i in range(x.shape[0]):
            real_r, real_l = right["attention_mask"][i] > 0, left["attention_mask"][i] > 0
            assert max_err(x[i][real_r], y[i][real_l]) < TOL, s


@pytest.mark.parametrize("family, head", [("gpt2", "seq"), ("llama", "lm"), ("mistral", "seq"), ("qwen2", "lm")])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_head_only_equals_full(dref, family, head, padding):
    """head_only: the last block computes the classifier token only; logits unchanged, and the
    last block's sites are the full run's at that token."""
    r = dref(family, head)
    model = r.model
    inputs = r.inputs if padding == "right" else to_left(r.inputs)
    last = model.config.n_layers - 1
    sites = (f"blocks.{last}.hook_resid_mid", f"blocks.{last}.mlp.hook_post", f"blocks.{last}.attn.hook_pattern",
             f"blocks.{last}.attn.hook_k", "ln_final.hook_normalized", "head.hook_cls")
    full = model.apply(model.params, inputs, capture=sites)
    fast = model.apply(model.params, inputs, capture=sites, head_only=True)
    assert max_err(full.logits, fast.logits) < TOL
    cls = np.asarray(model.classifier_positions(inputs))
    rows = np.arange(len(cls))
    for s in sites[:2] + sites[4:5]:
        assert fast.captured[s].shape[1] == 1, s
        assert max_err(fast.captured[s][:, 0], np.asarray(full.captured[s])[rows, cls]) < TOL, s
    pf, pq = np.asarray(full.captured[sites[2]]), np.asarray(fast.captured[sites[2]])
    assert max_err(pq[:, :, 0], pf[rows, :, cls]) < TOL
    assert fast.captured[sites[3]].shape == full.captured[sites[3]].shape  # keys: every token
    assert max_err(fast.captured["head.hook_cls"], full.captured["head.hook_cls"]) < TOL


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prefix_then_suffix_equals_full(dref, family):
    import jax

    r = dref(family, "seq")
    model, params, inputs = r.model, r.model.params, to_left(r.inputs)
    b = inputs["input_ids"].shape[0]
    pert = {
        "blocks.1.hook_resid_pre": Noise(jax.random.split(jax.random.key(1), b), 0.3),
        "blocks.1.mlp.hook_post": Scale(0.0, neurons=np.arange(37) % 3 == 0),
        "ln_final.hook_normalized": Noise(jax.random.key(2), 0.1),
    }
    prefix = model.prefix(params, inputs, until=list(pert))
    assert prefix.start == 1
    for head_only in (False, True):
        full = model.apply(params, inputs, pert, head_only=head_only).logits
        rest = model.apply(params, prefix, pert, head_only=head_only).logits
        assert max_err(full, rest) < TOL
    assert max_err(full, model.apply(params, inputs).logits) > 1e-3  # the perturbation bites
    assert model.resume_block("ln_final.hook_normalized") == model.config.n_layers
    # A prefix of every block (only the final norm and head perturbed).
    late = {"ln_final.hook_normalized": Noise(jax.random.key(3), 0.2), "head.hook_cls": Noise(jax.random.key(4), 0.2)}
    whole = model.prefix(params, inputs, until=list(late))
    assert whole.start == model.config.n_layers
    assert max_err(model.apply(params, whole, late, head_only=True).logits, model.apply(params, inputs, late).logits) < TOL
    np.testing.assert_array_equal(model.classifier_positions(prefix), model.classifier_positions(inputs))


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_save_round_trip_through_transformers(dref, tmp_path, family, head):
    import transformers as T

    r = dref(family, head)
    model = r.model
    folder = model.save(tmp_path / "saved")
    cls = T.AutoModelForSequenceClassification if head == "seq" else T.AutoModelForCausalLM
    hf, info = cls.from_pretrained(str(folder), attn_implementation="eager", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    logits = torch_forward(hf.eval(), r.inputs).logits.numpy()
    if logits.ndim == 3:
        logits = logits[np.arange(logits.shape[0]), np.asarray(model.classifier_positions(r.inputs))]
    assert max_err(model.apply(model.params, r.inputs).logits, logits) < TOL
    again = apex_jax.load(folder)
    assert again.config == model.config
    import jax

    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)))


def test_fresh_score_head_on_a_causal_lm(dref):
    """num_labels on a causal-LM folder: a new score head replaces lm_head (as HF does)."""
    r = dref("llama", "lm")
    m = apex_jax.load(r.folder, num_labels=2)
    assert (m.config.n_classes, m.config.lm_head) == (2, False)
    assert m.apply(m.params, r.inputs).logits.shape == (3, 2)
    with pytest.raises(ValueError, match="3-class score head"):
        apex_jax.load(dref("llama", "seq").folder, num_labels=2)


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_strict_conversion_names_the_weight(dref, tmp_path, family):
    from safetensors.numpy import load_file, save_file

    r = dref(family, "seq")
    state = load_file(str(r.folder / "model.safetensors"))
    cfg = (r.folder / "config.json").read_text()
    key = "transformer.h.1.mlp.c_fc.weight" if family == "gpt2" else "model.layers.1.self_attn.k_proj.bias"

    def folder_with(name, st):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(cfg)
        save_file(st, str(d / "model.safetensors"))
        return d

    with pytest.raises(ValueError, match=r"missing weights: \[.*" + key.split(".", 1)[1].replace(".", r"\.")):
        apex_jax.load(folder_with("missing", {k: v for k, v in state.items() if k != key}))
    with pytest.raises(ValueError, match=r"unused weights: \['extra\.weight'\]"):
        apex_jax.load(folder_with("unused", {**state, "extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="mis-shaped weights"):
        apex_jax.load(folder_with("shape", {**state, key: np.zeros((2,) + state[key].shape, np.float32)}))


def test_config_errors_name_the_problem():
    base = hf_config("llama").to_dict()
    with pytest.raises(ValueError, match=r"unsupported model_type 'bloom'; supported: .*gpt2.*llama.*mistral.*qwen2"):
        apex_jax.create({**base, "model_type": "bloom"}, num_labels=2)
    yarn = {**base, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}
    with pytest.raises(ValueError, match="unsupported rope type 'yarn'; supported: default, linear, llama3"):
        apex_jax.create(yarn, num_labels=2)
    # 4.x spelling of the rope settings (most published checkpoints): rope_theta + rope_scaling
    legacy = {k: v for k, v in base.items() if k != "rope_parameters"}
    legacy.update(rope_theta=5e5, rope_scaling={"type": "linear", "factor": 4.0})
    cfg = apex_jax.create(legacy, num_labels=2).config
    assert (cfg.rope_theta, cfg.rope_type, dict(cfg.rope_scaling)["factor"]) == (5e5, "linear", 4.0)


def test_create_and_sites_of_a_fresh_decoder():
    m = apex_jax.create(hf_config("gpt2").to_dict(), num_labels=None, lm_head=True)
    assert m.sites[-3:] == ("ln_final.hook_normalized", "head.hook_cls", "head.hook_logits")
    assert "blocks.1.attn.hook_k" in m.sites and len(m.sites) == 1 + 2 * 12 + 3
    batch = make_inputs()
    out = m.apply(m.params, batch, capture=("head.hook_cls", "blocks.0.attn.hook_k"))
    assert out.logits.shape == (3, 97) and out.captured["head.hook_cls"].shape == (3, 32)
    g = apex_jax.create(hf_config("llama").to_dict(), num_labels=2)
    k = g.apply(g.params, batch, capture=("blocks.0.attn.hook_k",)).captured["blocks.0.attn.hook_k"]
    assert k.shape == (3, 9, 2, 8)  # [batch, pos, n_kv_heads, d_head]
    headless = apex_jax.create(hf_config("qwen2").to_dict(), num_labels=None)
    assert headless.apply(headless.params, batch).logits is None
    assert "head.hook_cls" not in headless.sites and "ln_final.hook_normalized" in headless.sites


def _word_tokenizer(words):
    """A GPT-2-like word-level tokenizer: eos, no pad token (ids 3.. for the words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "<|endoftext|>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")


def test_encode_pads_right_with_eos_when_there_is_no_pad_token(dref, tmp_path):
    """GPT-2 tokenizers have no pad token: `encode` pads on the right with eos, and the
    classifier reads the last real token (not a trailing eos pad)."""
    import shutil

    r = dref("gpt2", "seq")
    folder = tmp_path / "with-tokenizer"
    shutil.copytree(r.folder, folder)
    texts = ["a fine film", "a dull film , far too long", "meh"]
    tok = _word_tokenizer(sorted({w for t in texts for w in t.split()}))
    tok.padding_side = "left"  # whatever the folder says, encode pads on the right
    tok.save_pretrained(str(folder))
    model = apex_jax.load(folder)
    assert model.tokenizer.pad_token == "<|endoftext|>"
    batch = model.encode(texts)
    lengths = np.array([3, 7, 1])
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), lengths)
    np.testing.assert_array_equal(batch["attention_mask"][:, 0], 1)  # right padding
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 2).all()  # eos pads
    np.testing.assert_array_equal(model.classifier_positions(batch), lengths - 1)
    # The padded example's logits are its logits alone, unpadded.
    logits = np.asarray(model.apply(model.params, batch).logits)
    one = model.encode([texts[0]])
    assert one["input_ids"].shape[1] == lengths[0]
    assert max_err(model.apply(model.params, one).logits[0], logits[0]) < TOL


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # tied and untied LM heads
def test_verbalizer_reads_the_label_tokens(dref, family):
    """A causal LM as a classifier: class logits = HF's next-token logits of the label tokens at
    the last real token; the head computes only those columns."""
    from apex_jax.models import verbalizer

    r = dref(family, "lm")
    clf = verbalizer(r.model, [17, 5, 60], label_names=["a", "b", "c"])
    assert (clf.config.n_classes, clf.label_names) == (3, ("a", "b", "c"))
    out = clf.apply(clf.params, r.inputs, capture=("head.hook_logits",))
    cls = np.asarray(clf.classifier_positions(r.inputs))
    hf = r.torch_out.logits.numpy()[np.arange(len(cls)), cls][:, [17, 5, 60]]
    assert out.logits.shape == (3, 3)
    assert max_err(out.logits, hf) < TOL
    fast = clf.apply(clf.params, to_left(r.inputs), head_only=True).logits
    assert max_err(fast, hf) < TOL
    with pytest.raises(ValueError, match="distinct"):
        verbalizer(r.model, [5, 5])
    with pytest.raises(ValueError, match="needs a causal LM"):
        verbalizer(dref(family, "seq").model, [1, 2])


def test_verbalizer_words_and_prompt(dref, tmp_path):
    import shutil

    from apex_jax.models import verbalizer

    r = dref("gpt2", "lm")
    folder = tmp_path / "lm-tok"
    shutil.copytree(r.folder, folder)
    words = ["review", ":", "sentiment", "good", "bad", "a", "fine", "film"]
    _word_tokenizer(words).save_pretrained(str(folder))
    clf = verbalizer(apex_jax.load(folder), ["bad", "good"], prompt="review : {text} sentiment :")
    assert clf.label_names == ("bad", "good") and clf.config.label_token_ids == (7, 6)
    batch = clf.encode(["a fine film", "film"])
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), [7, 5])
    assert clf.tokenizer.convert_ids_to_tokens(int(batch["input_ids"][0, 6])) == ":"
    lm = r.model.apply(r.model.params, batch).logits
    assert max_err(clf.apply(clf.params, batch).logits, np.asarray(lm)[:, [7, 6]]) < TOL
    with pytest.raises(ValueError, match=r"label 'good film' is 2 tokens"):
        verbalizer(apex_jax.load(folder), ["good film", "bad"])


def test_silence_at_each_examples_classifier_token(dref):
    """Per-example positions ([batch, n]): SYNAPSE-style silencing at a decoder's classifier
    token, which sits at a different position in every example."""
    from apex_jax.interventions import silence

    r = dref("llama", "seq")
    model, batch = r.model, r.inputs
    site = "blocks.0.hook_resid_post"
    cls = np.asarray(model.classifier_positions(batch))
    assert len(set(cls.tolist())) == 3  # three different positions
    neurons = (np.arange(32) % 4 == 0).astype(np.float32)
    out = model.apply(model.params, batch, {site: silence(neurons=neurons, positions=cls[:, None])}, capture=(site,))
    clean = model.apply(model.params, batch, capture=(site,))
    x, c = np.asarray(out.captured[site]), np.asarray(clean.captured[site])
    rows = np.arange(3)
    assert (x[rows, cls][:, neurons > 0] == 0).all()
    np.testing.assert_array_equal(x[rows, cls][:, neurons == 0], c[rows, cls][:, neurons == 0])
    other = np.ones(x.shape[:2], bool)
    other[rows, cls] = False
    np.testing.assert_array_equal(x[other], c[other])  # every other token untouched
    assert max_err(out.logits, clean.logits) > 1e-4
    with pytest.raises(ValueError, match=r"\[batch, n\] per example \(batch 3\)"):
        model.apply(model.params, batch, {site: silence(positions=np.zeros((2, 1), np.int32))})


def test_encoders_read_position_zero(bert):
    """classifier_positions is one API for both: [CLS] (0) for encoders, batch or prefix."""
    m, x = bert.model, bert.inputs
    np.testing.assert_array_equal(m.classifier_positions(x), np.zeros(3))
    np.testing.assert_array_equal(m.classifier_positions(m.prefix(m.params, x, "blocks.1.hook_resid_pre")), np.zeros(3))


def test_pad_id_falls_back_to_eos():
    """GPT-2 configs have no pad id; padded positions are filled with eos (as encode does)."""
    cfg = hf_config("gpt2").to_dict()
    cfg.pop("pad_token_id")
    assert apex_jax.create(cfg, num_labels=2).config.pad_token_id == 2
