"""Every bad input the library can be given is named: one table, one row per case.

Each row is (case id, callable, expected exception type, message fragments). The test asserts the
exception is of the apex-jax family (`apex_jax.errors.ApexJaxError`: a front end catches that one
type and prints the message, so no raw library error or traceback reaches a user), of the
expected class, and that its message names the problem and, where there are any, the valid
choices. Fixtures are tiny: a 1-layer, 8-wide BERT and ViT written with `apex_jax.create(...)
.save()`, and small temporary data files.

Below the table, tests for the behaviours that are not errors: long CSV fields load, a negative
σ under jit gives NaN (not a plausible answer), traced neuron masks never wrap, and
`check_label_space` returns the classes present.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import apex_jax
from apex_jax import assets, data
from apex_jax.data import Dataset, check_label_space, get_split, load_dataset
from apex_jax.errors import ApexJaxError, CheckpointError, InputError, MissingInputError
from apex_jax.interventions import Noise, apply_intervention, neuron_mask

BERT = dict(model_type="bert", vocab_size=30522, hidden_size=8, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
VIT = dict(model_type="vit", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=16, image_size=8, patch_size=4, num_channels=1)


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    """Tiny model folders (good and broken variants) and data files, built once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    w: dict[str, Any] = {"root": root}

    # A tiny BERT without tokenizer files (the cases below never reach a tokenizer).
    bert = apex_jax.create(BERT, num_labels=2, label_names=["negative", "positive"])
    bert.save(root / "bert")
    w["bert_no_tok"] = apex_jax.load(root / "bert")
    w["vit"] = apex_jax.create(VIT, num_labels=3)

    def variant(name: str) -> Path:
        folder = root / name
        shutil.copytree(root / "bert", folder)
        return folder

    weights = (root / "bert" / "model.safetensors").read_bytes()
    (variant("truncated") / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (variant("garbage") / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file" * 10)
    (variant("badjson") / "config.json").write_text('{"model_type": "bert",\n  "hidden_size": 8,,\n}')
    (variant("listjson") / "config.json").write_text("[1, 2]")
    cfg = json.loads((root / "bert" / "config.json").read_text())
    (variant("gptj") / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt-j"}))
    (variant("nofield") / "config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
    (variant("unused") / "model.safetensors").unlink()
    from safetensors.numpy import load_file, save_file

    state = load_file(str(root / "bert" / "model.safetensors"))
    save_file({**state, "lm_head.bias": np.zeros(3, np.float32)}, str(root / "unused" / "model.safetensors"))
    shard = variant("shard")
    (shard / "model.safetensors").unlink()
    (shard / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"classifier.weight": "model-00001-of-00002.safetensors"}}))
    noweights = variant("noweights")
    (noweights / "model.safetensors").unlink()
    noconfig = variant("noconfig")
    (noconfig / "config.json").unlink()
    badtok = variant("badtok")
    (badtok / "tokenizer.json").write_text("{not json")
    (badtok / "vocab.txt").write_text("[PAD]\n[UNK]\n")

    # Data files.
    def write(name: str, content: str | bytes) -> Path:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    rows40 = "text,label\n" + "".join(f"sentence {i},{i % 2}\n" for i in range(40))
    w["csv40"] = write("forty.csv", rows40)
    w["latin1_csv"] = write("latin1.csv", "text,label\ngood,1\ncaf\xe9 noir,0\n".encode("latin-1"))
    w["latin1_jsonl"] = write(
        "latin1.jsonl", '{"text": "ok", "label": 0}\n{"text": "na\xefve", "label": 1}\n'.encode("latin-1"))
    w["empty_csv"] = write("empty.csv", "")
    w["header_csv"] = write("header.csv", "text,label\n")
    w["empty_jsonl"] = write("empty.jsonl", "\n\n")
    w["notext_csv"] = write("notext.csv", "sentence,label\nfine,1\n")
    w["halves_csv"] = write("halves.csv", "text,label\na,0\nb,0.5\nc,1\n")
    w["float_jsonl"] = write("floats.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1.5}\n')
    w["neg_csv"] = write("neg.csv", "text,label\na,-1\nb,1\n")
    w["badjsonl"] = write("bad.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n')
    w["npz_garbage"] = write("garbage.npz", b"PK\x03\x04 truncated zip")
    np.savez(root / "range.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 1, 5]),
             label_names=np.array(["a", "b"]))
    w["range_npz"] = root / "range.npz"
    np.savez(root / "digits.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4) % 2)
    w["images"] = load_dataset(root / "digits.npz").inputs
    return w


class Case(NamedTuple):
    name: str
    call: Callable[[dict], Any]  # world -> anything; must raise
    error: type[BaseException]
    fragments: tuple[str, ...]  # all must occur in str(error)


def _load(folder: str, **kw) -> Callable[[dict], Any]:
    return lambda w: apex_jax.load(w["root"] / folder, **kw)


def _data(key: str) -> Callable[[dict], Any]:
    return lambda w: load_dataset(w[key])


def _ds(labels, names) -> Dataset:
    return Dataset("toy", "text", [f"t{i}" for i in range(len(labels))], np.array(labels), names)


CASES = [
    # --- model folders
    Case("truncated safetensors", _load("truncated"), InputError,
         ("truncated/model.safetensors", "truncated or corrupt", "download it again")),
    Case("garbage safetensors", _load("garbage"), InputError,
         ("garbage/model.safetensors", "not a readable safetensors file")),
    Case("malformed config.json", _load("badjson"), InputError,
         ("badjson/config.json", "not valid JSON", "line 2, column")),
    Case("config.json not an object", _load("listjson"), InputError,
         ("listjson/config.json", "JSON object")),
    Case("unknown model_type", _load("gptj"), InputError,
         ("gptj/config.json", "unsupported model_type 'gpt-j'", "supported:", "bert", "vit")),
    Case("config field missing", _load("nofield"), InputError,
         ("nofield/config.json", "lacks the field 'hidden_size'")),
    Case("no config.json", _load("noconfig"), MissingInputError,
         ("noconfig has no config.json", "minilm")),
    Case("no weights", _load("noweights"), MissingInputError,
         ("has no weights", "model.safetensors", "pytorch_model.bin")),
    Case("missing shard", _load("shard"), MissingInputError,
         ("model-00001-of-00002.safetensors", "not in")),
    Case("no such model", _load("does-not-exist"), MissingInputError,
         ("does-not-exist", "is not a folder", "minilm")),
    Case("unused weights", _load("unused"), InputError, ("unused weights", "lm_head.bias", "ignore=")),
    Case("num_labels disagrees", _load("bert", num_labels=5), InputError,
         ("2-class classifier", "num_labels=5")),
    Case("corrupt tokenizer files", _load("badtok"), InputError,
         ("badtok", "tokenizer files", "cannot be loaded")),
    Case("no tokenizer", lambda w: w["bert_no_tok"].encode(["a text"]), InputError,
         ("has no tokenizer", "tokenizer.json", "vocab.txt")),
    # --- model inputs
    Case("images to a text model", lambda w: w["bert_no_tok"].encode(w["images"]), InputError,
         ("text model (bert)", "list of strings", "array of shape (4, 1, 8, 8)")),
    Case("texts to an image model", lambda w: w["vit"].encode(["a", "b"]), InputError,
         ("image model (vit", "expects images", "list of 2 str")),
    Case("max_length 0", lambda w: w["bert_no_tok"].encode(["a"], max_length=0), InputError,
         ("max_length must be a positive integer", "got 0")),
    Case("max_length negative", lambda w: w["bert_no_tok"].encode(["a"], max_length=-4), InputError,
         ("max_length", "got -4")),
    Case("pad_to_multiple_of 0", lambda w: w["bert_no_tok"].encode(["a"], pad_to_multiple_of=0),
         InputError, ("pad_to_multiple_of must be a positive integer",)),
    Case("image of the wrong size", lambda w: w["vit"].forward(w["vit"].encode(np.zeros((2, 9, 9)))),
         InputError, ("pixel_values have shape (2, 1, 9, 9)", "[batch, 1, 8, 8]")),
    Case("unknown site", lambda w: w["vit"].apply(
        w["vit"].params, w["vit"].encode(w["images"]), {"blocks.7.hook_resid_post": apex_jax.silence()}),
        InputError, ("unknown site(s) ['blocks.7.hook_resid_post']", "valid sites")),
    # --- data
    Case("non-UTF-8 CSV", _data("latin1_csv"), InputError,
         ("latin1.csv:3", "not UTF-8", "column 4", "save the file as UTF-8")),
    Case("non-UTF-8 JSONL", _data("latin1_jsonl"), InputError, ("latin1.jsonl:2", "not UTF-8")),
    Case("empty CSV", _data("empty_csv"), InputError, ("empty.csv: the file is empty", "'text'")),
    Case("CSV with only a header", _data("header_csv"), InputError,
         ("header.csv: only a header", "no data rows")),
    Case("empty JSONL", _data("empty_jsonl"), InputError, ("empty.jsonl", "no records")),
    Case("CSV without a text column", _data("notext_csv"), InputError,
         ("notext.csv: no text column 'text'", "--text-column", "'sentence', 'label'")),
    Case("non-integer numeric label (CSV)", _data("halves_csv"), InputError,
         ("halves.csv:3", "label '0.5' is a number but not an integer", "class indices")),
    Case("float label (JSONL)", _data("float_jsonl"), InputError,
         ("floats.jsonl:2", "label 1.5", "integer class indices")),
    Case("negative label", _data("neg_csv"), InputError, ("[-1]", "outside the valid range")),
    Case("label beyond label_names (npz)", _data("range_npz"), InputError,
         ("label values [5]", "[0, 2)", "('a', 'b')")),
    Case("malformed JSONL line", _data("badjsonl"), InputError, ("bad.jsonl:2", "invalid JSON")),
    Case("corrupt npz", _data("npz_garbage"), InputError,
         ("garbage.npz", "cannot read it as a NumPy .npz", "numpy.savez")),
    Case("unknown data set", lambda w: load_dataset("vader-move"), InputError,
         ("'vader-move'", "vader-movies", "mnist5k", ".csv", ".npz")),
    Case("n larger than the split", lambda w: get_split(w["csv40"], "test", n=100), InputError,
         ("n = 100", "has 8", "choose n <= 8")),
    Case("n zero", lambda w: get_split(w["csv40"], "test", n=0), InputError, ("positive integer", "got 0")),
    Case("unknown split", lambda w: get_split(w["csv40"], "validation"), InputError,
         ("'validation'", "train, val, test, all")),
    Case("unknown asset", lambda w: assets.asset_path("bert"), InputError,
         ("unknown asset 'bert'", "minilm", "vader")),
    # --- interventions
    Case("neuron index past the end", lambda w: neuron_mask([3, 99, 16], 16), InputError,
         ("[16, 99]", "valid range [0, 16)")),
    Case("negative neuron index", lambda w: neuron_mask([-1, 2], 16), InputError,
         ("[-1]", "not counted from the end")),
    Case("neuron_mask size 0", lambda w: neuron_mask([0], 0), InputError, ("size must be a positive",)),
    Case("float neuron indices", lambda w: neuron_mask(np.array([0.5]), 4), InputError, ("integers",)),
    Case("negative sigma", lambda w: Noise(jax.random.key(0), -0.1), InputError,
         ("sigma must be finite and >= 0", "-0.1")),
    Case("NaN sigma", lambda w: Noise(jax.random.key(0), float("nan")), InputError, ("sigma", "nan")),
    Case("negative sigma in a list", lambda w: Noise(jax.random.key(0), [0.1, -1.0]), InputError,
         ("sigma", "-1.0")),
    Case("position out of range", lambda w: w["vit"].apply(
        w["vit"].params, w["vit"].encode(w["images"]),
        {"hook_embed": apex_jax.silence(positions=jnp.array([40]))}), InputError,
        ("positions [40]", "[0, 5)")),
    Case("image data set for a text model",
         lambda w: data.check_input_kind(load_dataset(w["root"] / "digits.npz"), "text", "bert"),
         InputError, ("digits.npz", "holds image inputs", "bert is a text model", "vader-movies", ".csv")),
    Case("text data set for an image model",
         lambda w: data.check_input_kind(load_dataset(w["csv40"]), "image"), InputError,
         ("holds text inputs", "the model is an image model", "mnist5k", ".npz")),
    # --- label spaces
    Case("labels beyond the model's classes",
         lambda w: check_label_space(2, ("negative", "positive"), _ds([0, 1, 2], ("a", "b", "c")), "evaluate"),
         InputError, ("labels [2]", "2 classes (0..1)", "probing")),
    Case("class names disagree",
         lambda w: check_label_space(27, tuple(f"topic{k}" for k in range(27)),
                                     _ds([0, 1], ("negative", "positive")), "evaluate"),
         InputError, ("disagree", "'negative' vs model 'topic0'", "another label set")),
    Case("evaluate a head-less model",
         lambda w: check_label_space(None, None, _ds([0, 1], ("0", "1")), "evaluate"), InputError,
         ("no classifier", "num_labels")),
    Case("probe on one class", lambda w: check_label_space(2, None, _ds([1, 1], ("0", "1")), "probe"),
         InputError, ("only class 1", "at least two classes")),
    Case("unknown purpose", lambda w: check_label_space(2, None, _ds([0, 1], ("0", "1")), "accuracy"),
         InputError, ("'accuracy'", "evaluate, probe")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_named(case: Case, world):
    with pytest.raises(Exception) as info:
        case.call(world)
    err = info.value
    # One family: a front end catches ApexJaxError and prints the message (exit status 2).
    assert isinstance(err, ApexJaxError), f"{type(err).__module__}.{type(err).__name__}: {err}"
    assert isinstance(err, case.error), type(err)
    message = str(err)
    missing = [f for f in case.fragments if f not in message]
    assert not missing, f"message lacks {missing}: {message}"


def test_family_keeps_builtin_types():
    # `except ValueError` / `except FileNotFoundError` / `except RuntimeError` keep working.
    assert issubclass(InputError, ValueError)
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(MissingInputError, InputError)
    assert issubclass(CheckpointError, RuntimeError) and issubclass(CheckpointError, ApexJaxError)
    assert issubclass(assets.AssetMissingError, MissingInputError)


# ---------------------------------------------------------------------- what now works


def test_long_csv_fields_load(tmp_path):
    long_text = "word " * 60_000  # 300,000 characters: past csv's default 131,072 limit
    path = tmp_path / "long.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerow([long_text, 1])
        writer.writerow(["short", 0])
    before = csv.field_size_limit()
    ds = load_dataset(path)
    assert ds.inputs[0] == long_text and ds.labels.tolist() == [1, 0]
    assert csv.field_size_limit() == before  # the module-wide setting is restored


def test_negative_sigma_under_jit_is_nan_not_plausible():
    x = jnp.ones((2, 3, 4))

    @jax.jit
    def run(sigma):
        return apply_intervention(Noise(jax.random.key(0), sigma), x, "hook_embed", 0)

    assert bool(jnp.isnan(run(jnp.float32(-0.5))).all())
    assert bool(jnp.isfinite(run(jnp.float32(0.5))).all())
    assert bool((run(jnp.float32(0.0)) == x).all())  # σ = 0 stays exactly the identity


def test_traced_neuron_mask_drops_never_wraps():
    mask = jax.jit(lambda i: neuron_mask(i, 4))(jnp.array([1, -1, 9]))
    assert mask.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert neuron_mask([], 3).tolist() == [0.0, 0.0, 0.0]
    assert neuron_mask([2, 2, 0], 3).tolist() == [1.0, 0.0, 1.0]


def test_check_label_space():
    vader = _ds([0, 1, 1, 0], ("negative", "positive"))
    same = check_label_space(2, ("Negative", "Positive"), vader, "evaluate")
    assert same.present == (0, 1) and same.notes == ()
    # Index-only names on either side cannot be compared: allowed, and said.
    indexed = check_label_space(2, ("LABEL_0", "LABEL_1"), vader, "evaluate")
    assert indexed.present == (0, 1) and "not compared" in indexed.notes[0]
    # Fewer classes present than the model has: metrics over the present ones.
    one = check_label_space(3, None, _ds([2, 2, 0], ("0", "1", "2")), "evaluate")
    assert one.present == (0, 2) and one.present_names == ("0", "2")
    assert "2 of the model's 3 classes" in one.notes[-1]
    # Probing another task's labels is legitimate: not compared with the model's classes.
    topics = _ds([0, 4, 9], tuple(f"t{k}" for k in range(10)))
    assert check_label_space(2, ("negative", "positive"), topics, "probe").present == (0, 4, 9)
    assert check_label_space(None, None, topics, "probe").n_model_classes is None


def test_data_module_exports():
    assert {"check_input_kind", "check_label_space", "LabelSpace", "LABEL_PURPOSES"} <= set(data.__all__)
    data.check_input_kind(_ds([0, 1], ("0", "1")), "text")  # same kind: no error
