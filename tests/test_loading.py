"""Loading and saving Hugging Face folders: round trips, checkpoint variants, strict errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from tests.helpers import BERT_KW, max_err

import apex_jax
from tests.helpers.hf_parity import random_model
from tests.helpers.hf_reference import ARCHS, hf_config, make_inputs, torch_forward


def _state(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(folder / "model.safetensors")))


def _folder(dst: Path, src: Path, state: dict | None = None, config: dict | None = None) -> Path:
    """A copy of HF folder `src` with other weights (safetensors) and/or another config."""
    from safetensors.numpy import save_file

    dst.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config or {})
    (dst / "config.json").write_text(json.dumps(cfg))
    if state is None:
        shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    else:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(dst / "model.safetensors"))
    return dst


def assert_same_params(a, b):
    la, ta = jax.tree.flatten_with_path(a)
    lb, tb = jax.tree.flatten_with_path(b)
    assert ta == tb, "different parameter trees"
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype == np.float32, path
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _hf_class(arch):
    import transformers as T

    return T.AutoModelForImageClassification if arch == "vit" else T.AutoModelForSequenceClassification


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("arch", ARCHS)
def test_save_reload_in_transformers_and_apex(ref, arch, tmp_path):
    r = ref(arch, **BERT_KW)
    model = r.model
    # Save other parameters than the loaded ones, to see that `params` is what gets written.
    params = jax.tree.map(lambda p: p * 1.01 + 1e-3, model.params)
    out = model.save(tmp_path / "saved", params)
    assert out == tmp_path / "saved"
    # The same weight names as transformers' own save_pretrained writes.
    assert set(_state(out)) == set(_state(r.folder))

    hf, info = _hf_class(arch).from_pretrained(str(out), attn_implementation="eager", output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    ours = model.apply(params, r.inputs).logits
    theirs = torch_forward(hf.eval(), r.inputs).logits
    assert max_err(ours, theirs) <= 1e-5
    assert max_err(theirs, r.torch_out.logits) > 1e-3  # the new params, not the old ones

    again = apex_jax.load(out)
    assert again.config == model.config
    assert_same_params(again.params, jax.tree.map(np.asarray, params))
    assert again.label_names == model.label_names


def test_interrupted_save_leaves_the_previous_folder_whole(ref, tmp_path, monkeypatch):
    """A save that fails half-way (here: while writing the weights) leaves every file of the
    previous save byte-identical, keeps unrelated files, and leaves no temporary folder."""
    import safetensors.numpy

    model = ref("bert", **BERT_KW).model
    out = model.save(tmp_path / "saved")
    (out / "notes.txt").write_text("mine")
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def half_write(state, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)  # a truncated file, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", half_write)
    with pytest.raises(KeyboardInterrupt):
        model.save(out, jax.tree.map(lambda p: p + 1, model.params))
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]
    assert_same_params(apex_jax.load(out).params, jax.tree.map(np.asarray, model.params))


def test_label_names_round_trip(ref, tmp_path):
    r = ref("bert", **BERT_KW)
    names = ("negative", "neutral", "positive")
    model = apex_jax.load(r.folder, label_names=names)
    assert model.label_names == names
    out = model.save(tmp_path / "named")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert cfg["num_labels"] == 3 and cfg["architectures"] == ["BertForSequenceClassification"]
    assert apex_jax.load(out).label_names == names
    with pytest.raises(ValueError, match=r"2 label names given for 3 classes"):
        apex_jax.load(r.folder, label_names=names[:2])


# --------------------------------------------------------------------- checkpoint variants
def test_sharded_safetensors(ref, tmp_path):
    from safetensors.numpy import save_file

    r = ref("bert", **BERT_KW)
    state = _state(r.folder)
    keys = sorted(state)
    folder = _folder(tmp_path / "sharded", r.folder, state={})
    (folder / "model.safetensors").unlink()
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_params(apex_jax.load(folder).params, r.model.params)


@pytest.mark.parametrize("arch", ["bert", "vit"])
def test_pytorch_model_bin(ref, arch, tmp_path):
    """A pickled state dict; for ViT it carries transformers 5's module names
    (`vit.layers.0.attention.q_proj`), not the on-disk ones."""
    import torch

    r = ref(arch, **BERT_KW)
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(r.folder / "config.json", folder / "config.json")
    torch.save(r.hf.state_dict(), folder / "pytorch_model.bin")
    if arch == "vit":
        assert any(".layers.0.attention.q_proj." in k for k in r.hf.state_dict())
    assert_same_params(apex_jax.load(folder).params, r.model.params)


def test_legacy_layernorm_gamma_beta(ref, tmp_path):
    r = ref("bert", **BERT_KW)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in _state(r.folder).items()}
    assert sum(".gamma" in k for k in state) == 5  # embeddings + 2 per layer
    assert_same_params(apex_jax.load(_folder(tmp_path / "legacy", r.folder, state)).params, r.model.params)


def test_vit_both_key_spellings(ref, tmp_path):
    """ViT weights named `encoder.layer.N.attention.attention.query` (what every transformers
    version writes to disk) or `layers.N.attention.q_proj` (transformers 5's modules) load the
    same; one weight under both spellings is an error naming it."""
    r = ref("vit", **BERT_KW)
    on_disk = _state(r.folder)
    assert "vit.encoder.layer.0.attention.attention.query.weight" in on_disk
    modules = {k: v.numpy() for k, v in r.hf.state_dict().items()}
    assert "vit.layers.1.mlp.fc2.weight" in modules
    assert_same_params(apex_jax.load(_folder(tmp_path / "new", r.folder, modules)).params, r.model.params)
    both = {**on_disk, "vit.layers.0.attention.q_proj.weight": modules["vit.layers.0.attention.q_proj.weight"]}
    with pytest.raises(ValueError, match=r"weight 'vit\.(layers\.0\.attention\.q_proj|encoder\.layer\.0\.attention\."
                                         r"attention\.query)\.weight' appears twice"):
        apex_jax.load(_folder(tmp_path / "both", r.folder, both))


@pytest.mark.parametrize("arch", ARCHS)
def test_headless_checkpoint_gets_a_fresh_head(arch, tmp_path):
    """A base-model checkpoint (BertModel, ViTModel, ...): loads as a head-less encoder equal to
    the HF base model; with num_labels it gets a fresh head of the right shape that runs, and
    saves to a folder HF's classifier loads with no missing or unexpected weights."""
    import transformers as T

    base = random_model(lambda: T.AutoModel.from_config(hf_config(arch, **BERT_KW), attn_implementation="eager"),
                        tmp_path / "base")
    x = make_inputs(arch)

    enc = apex_jax.load(tmp_path / "base")
    assert enc.config.n_classes is None and "head.hook_cls" not in enc.sites
    last = f"blocks.{enc.config.n_layers - 1}.hook_resid_post"
    out = enc.apply(enc.params, x, capture=(last,))
    assert out.logits is None
    mask = x.get("attention_mask", np.ones(out.captured[last].shape[:2]))
    assert max_err(out.captured[last], torch_forward(base, x).hidden_states[-1], mask) <= 1e-5

    clf = apex_jax.load(tmp_path / "base", num_labels=4, seed=3)
    d = clf.config.d_model
    assert clf.config.n_classes == 4
    assert clf.params["head"]["classifier"]["kernel"].shape == (d, 4)
    logits = np.asarray(clf.apply(clf.params, x).logits)
    assert logits.shape == (3, 4) and np.isfinite(logits).all() and logits.std() > 0
    # The body is the checkpoint's; a BERT pooler too; the head is seeded.
    assert_same_params({k: v for k, v in clf.params.items() if k != "head"},
                       {k: v for k, v in enc.params.items() if k != "head"})
    if arch == "bert":
        assert_same_params(clf.params["head"]["pooler"], enc.params["head"]["pooler"])
    same = apex_jax.load(tmp_path / "base", num_labels=4, seed=3).params["head"]
    other = apex_jax.load(tmp_path / "base", num_labels=4, seed=4).params["head"]
    assert_same_params(same, clf.params["head"])
    assert not np.array_equal(other["classifier"]["kernel"], clf.params["head"]["classifier"]["kernel"])

    saved = clf.save(tmp_path / "clf")
    hf, info = _hf_class(arch).from_pretrained(str(saved), attn_implementation="eager", output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    assert max_err(logits, torch_forward(hf.eval(), x).logits) <= 1e-5


def test_ignore_drops_a_pretraining_head(tmp_path):
    import torch
    import transformers as T

    torch.manual_seed(0)
    mlm = T.BertForMaskedLM(hf_config("bert", **BERT_KW)).eval()
    mlm.save_pretrained(str(tmp_path / "mlm"))
    with pytest.raises(ValueError, match=r"unused weights: \['cls\.predictions\.[^]]*\] \(a head of another task\? "
                                         r"pass ignore=\['pattern\*'\]"):
        apex_jax.load(tmp_path / "mlm")
    enc = apex_jax.load(tmp_path / "mlm", ignore=["cls.*"])
    assert enc.config.n_classes is None and not enc.config.has_pooler
    x = make_inputs("bert")
    out = enc.apply(enc.params, x, capture=("blocks.1.hook_resid_post",))
    ref_h = torch_forward(mlm, x).hidden_states[-1]
    assert max_err(out.captured["blocks.1.hook_resid_post"], ref_h, x["attention_mask"]) <= 1e-5
    # With a task: the MLM head dropped, a fresh pooler + classifier added.
    clf = apex_jax.load(tmp_path / "mlm", ignore=["cls.*"], num_labels=2)
    assert clf.apply(clf.params, x).logits.shape == (3, 2)
    # A pattern that matches nothing leaves the error.
    with pytest.raises(ValueError, match=r"unused weights"):
        apex_jax.load(tmp_path / "mlm", ignore=["classifier.*"])


# ----------------------------------------------------------------------------------- errors
def test_unknown_model_type(ref, tmp_path):
    r = ref("bert", **BERT_KW)
    folder = _folder(tmp_path / "bloom", r.folder, config={"model_type": "bloom"})
    with pytest.raises(ValueError, match=r"unsupported model_type 'bloom'; supported: bert, big_bird, camembert, deberta, "
                                         r"deberta-v2, distilbert, gemma, gemma2, gemma3_text, gpt2, gpt_neox, llama, mistral, modernbert, phi3, qwen2, roberta, vit, xlm-roberta"):
        apex_jax.load(folder)


def test_missing_unused_and_misshaped_weights_are_named(ref, tmp_path):
    r = ref("bert", **BERT_KW)
    state = _state(r.folder)

    def load_with(name, **change):
        s = dict(state)
        for k, v in change.items():
            k = k.replace("__", ".")
            if v is None:
                del s[k]
            else:
                s[k] = v
        return apex_jax.load(_folder(tmp_path / name, r.folder, s))

    with pytest.raises(ValueError, match=r"cannot load bert weights: missing weights: "
                                         r"\['encoder\.layer\.1\.output\.dense\.bias'\]\.$"):
        load_with("missing", bert__encoder__layer__1__output__dense__bias=None)
    with pytest.raises(ValueError, match=r"unused weights: \['encoder\.layer\.0\.attention\.self\.extra\.weight'\]"):
        load_with("extra", bert__encoder__layer__0__attention__self__extra__weight=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['encoder\.layer\.0\.intermediate\.dense\.weight: "
                                         r"\(22, 15\), expected \(23, 15\)'\]"):
        load_with("shape", bert__encoder__layer__0__intermediate__dense__weight=np.zeros((22, 15), np.float32))
    with pytest.raises(ValueError, match=r"mis-shaped weights: \['classifier\.weight: \(3, 14\), expected \(3, 15\)'\]"):
        load_with("head", classifier__weight=np.zeros((3, 14), np.float32))
    # All problems at once, each named, in one error.
    with pytest.raises(ValueError) as e:
        load_with("all", bert__pooler__dense__bias=None, bert__extra=np.zeros(1, np.float32),
                  bert__embeddings__word_embeddings__weight=np.zeros((96, 15), np.float32))
    msg = str(e.value)
    assert "missing weights: ['pooler.dense.bias']" in msg
    assert "unused weights: ['extra']" in msg
    assert "embeddings.word_embeddings.weight: (96, 15), expected (97, 15)" in msg


def test_num_labels_must_agree_with_the_checkpoint(ref):
    r = ref("bert", **BERT_KW)
    with pytest.raises(ValueError, match=r"has a 3-class classifier but num_labels=5 was asked"):
        apex_jax.load(r.folder, num_labels=5)
    assert apex_jax.load(r.folder, num_labels=3).config.n_classes == 3


def test_bad_folders(ref, tmp_path):
    r = ref("bert", **BERT_KW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json; is it a Hugging Face model folder\?"):
        apex_jax.load(empty)
    shutil.copy(r.folder / "config.json", empty / "config.json")
    with pytest.raises(FileNotFoundError, match=r"has no weights: expected model\.safetensors"):
        apex_jax.load(empty)
    with pytest.raises(FileNotFoundError, match=r"is not a folder"):
        apex_jax.load(tmp_path / "does-not-exist")
