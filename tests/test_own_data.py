"""A user's own data: one table row per case, input -> exit code or
exception -> message fragments -> output.

1. labels optional for APEX: inputs labelled for another task (a 27-class topic model on
   sentiment data) and unlabelled inputs (a text-only CSV) run, without clean accuracy and with
   the reason; evaluation and probes keep their checks.
2. a user's file is used whole by default (built-in data keeps its test split); the split is
   printed and recorded; --split is in --help with its choices.
3. the default max length is the model's own limit; every cut input is counted and reported.
4. a causal LM without label words is refused with the fix, unless vocabulary classes are asked for.
5. string labels map to the model's own id2label by name (any order, any case); a real mismatch
   names both orders, in the CLI and in `apex_run`.
6. data as a pandas DataFrame, a dict of lists, a list of strings, a `datasets.Dataset`-like
   object (duck-typed), and --text-column / --label-column for files.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import apex_jax
from apex_jax import cli, inputs
from apex_jax.apex.run import apex_run
from apex_jax.data import Dataset, check_label_space, from_memory
from apex_jax.errors import InputError
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder

FAST = ["--draws", "2", "--sigmas", "0.1,1", "--quiet"]
TOPICS = tuple(f"topic{k}" for k in range(27))


def _relabel(folder: Path, names: tuple[str, ...]) -> Path:
    """A copy of the tiny BERT whose classifier has one row per name (id2label = names)."""
    from safetensors.numpy import load_file, save_file

    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {str(k): n for k, n in enumerate(names)}
    cfg["label2id"] = {n: k for k, n in enumerate(names)}
    (folder / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(0)
    w["classifier.weight"] = rng.normal(0, 0.5, (len(names), w["classifier.weight"].shape[1])).astype(np.float32)
    w["classifier.bias"] = np.zeros(len(names), np.float32)
    save_file(w, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    e: dict[str, Any] = {"root": root}
    base = tiny_bert_folder(root / "bert", resolve("minilm"), seed=1)
    e["bert"] = base
    for name, labels in (("topics", TOPICS), ("posneg", ("positive", "negative")), ("other", ("pos", "neg"))):
        shutil.copytree(base, root / name)
        e[name] = _relabel(root / name, labels)
    words = [("a wonderful superb film", "positive"), ("an awful boring film", "negative")] * 5
    e["named"] = _csv(root / "named.csv", ["text", "label"], [[t, y] for t, y in words])  # 10 rows
    e["upper"] = _csv(root / "upper.csv", ["text", "label"], [[t, y.upper()] for t, y in words])
    e["textonly"] = _csv(root / "textonly.csv", ["text"], [[t] for t, _ in words])
    e["columns"] = _csv(root / "columns.csv", ["sentence", "sentiment"], [[t, y] for t, y in words])
    e["long"] = _csv(root / "long.csv", ["text", "label"],
                     [["great " * 100 + "film", 1], ["short film", 0], ["awful " * 70, 0]])
    e["task"] = sentiment_csv(root / "task.csv", 40)
    e["three"] = _csv(root / "three.csv", ["text", "label"], [[t, k % 3] for k, (t, _) in enumerate(words)])
    e["lm"] = apex_jax.create(dict(model_type="gpt2", vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32),
                              num_labels=None, lm_head=True)
    return e


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _samples(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "samples.csv")))


# ----------------------------------------------------------------------------- the command line
@dataclass
class Cli:
    item: str
    argv: Callable[[dict], list]  # after "apex MODEL --data DATA --out OUT"
    model: str
    data: str
    code: int
    fragments: tuple[str, ...]  # in stdout (exit 0) or stderr (exit 2)
    check: Callable[[Path, dict], None] | None = None


def _no_accuracy(why: str) -> Callable[[Path, dict], None]:
    def check(out: Path, e: dict) -> None:
        s = _summary(out)
        assert s["results"]["clean_accuracy"] is None and why in s["results"]["accuracy_note"]
        assert s["label_space"]["accuracy"] is False and why in s["label_space"]["no_accuracy_reason"]
        assert s["results"]["n_inputs"] == 10
        page = (out / "index.html").read_text()  # the page says why beside the missing number
        assert s["results"]["accuracy_note"].replace("'", "&#x27;") in page or s["results"]["accuracy_note"] in page
    return check


def _whole_file(out: Path, e: dict) -> None:
    s = _summary(out)
    assert s["results"]["split"] == "all" and s["results"]["n_inputs"] == 10
    assert json.loads((out / "run.json").read_text())["settings"]["split_used"] == "all"
    assert s["results"]["clean_accuracy"] is not None


def _truncated(out: Path, e: dict) -> None:
    assert _summary(out)["results"]["truncation"] == {"max_length": 64, "n_truncated": 2}


def _text_column(out: Path, e: dict) -> None:
    rows = _samples(out)
    assert [r["text"] for r in rows[:2]] == ["a wonderful superb film", "an awful boring film"]
    assert [r["label"] for r in rows[:2]] == ["", ""]  # unlabelled


def _by_name(out: Path, e: dict) -> None:
    s = _summary(out)
    rows = _samples(out)
    # the model's order: positive = 0, negative = 1 (the file's sorted order is the reverse)
    assert [r["label"] for r in rows[:2]] == ["0", "1"]
    acc = np.mean([r["label"] == r["clean_prediction"] for r in rows])
    assert s["results"]["clean_accuracy"] == pytest.approx(acc)
    assert s["results"]["label_names"] == ["positive", "negative"]


def _columns(out: Path, e: dict) -> None:
    s = _summary(out)
    assert s["results"]["n_inputs"] == 10 and s["results"]["clean_accuracy"] is not None
    assert s["settings"]["text_column"] == "sentence" and s["settings"]["label_column"] == "sentiment"


CLI = [
    Cli("1 another task's labels", lambda e: [], "topics", "named", 0,
        ("no clean accuracy", "not the model's", "data: ", "10 inputs"),
        _no_accuracy("labelled for another task")),
    Cli("1 labels beyond the model's classes", lambda e: [], "bert", "three", 0,
        ("no clean accuracy: labels [2] (2) are not among the model's 2 classes",)),
    Cli("1 text-only CSV", lambda e: [], "topics", "textonly", 0,
        ("unlabelled", "no clean accuracy: the inputs have no labels"), _no_accuracy("no labels")),
    Cli("2 a file is used whole", lambda e: [], "posneg", "named", 0, ("split all: 10 inputs",), _whole_file),
    Cli("2 --split test still works", lambda e: ["--split", "test"], "posneg", "named", 0, ("split test: 2 inputs",)),
    Cli("2 unknown split", lambda e: ["--split", "dev"], "posneg", "named", 2,
        ("--split must be one of train, val, test, all", "'dev'")),
    Cli("3 cut at the model's limit, counted", lambda e: [], "bert", "long", 0,
        ("2 of 3 inputs are longer than 64 tokens", "the model's own limit", "2 of 3 inputs cut to 64"),
        _truncated),
    Cli("samples.csv has the text", lambda e: [], "topics", "textonly", 0, (), _text_column),
    Cli("5 names in another order map by name", lambda e: [], "posneg", "named", 0, ("clean accuracy",), _by_name),
    Cli("5 names in another case map by name", lambda e: [], "posneg", "upper", 0, ("clean accuracy",), _by_name),
    Cli("6 --text-column / --label-column", lambda e: ["--text-column", "sentence", "--label-column", "sentiment"],
        "posneg", "columns", 0, ("split all: 10 inputs", "clean accuracy"), _columns),
    Cli("6 a missing --text-column", lambda e: [], "posneg", "columns", 2, ("no text column 'text'", "sentence",
                                                                              "--text-column")),
    Cli("6 a wrong --label-column", lambda e: ["--text-column", "sentence", "--label-column", "y"], "posneg",
        "columns", 2, ("no label column 'y'", "sentiment")),
]


@pytest.mark.parametrize("case", CLI, ids=[c.item for c in CLI])
def test_cli(case: Cli, env, capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["apex", env[case.model], "--data", env[case.data], "--out", out, *FAST, *case.argv(env)]
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert rc == case.code, cap.err
    text = cap.out if rc == 0 else cap.err
    for fragment in case.fragments:
        assert fragment in text, (fragment, text)
    if case.check:
        case.check(out, env)


def test_help_lists_split_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["apex", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--split {train,val,test,all}" in text
    assert "default: test of a built-in data set, all of a file" in text
    assert "default: the model's own limit" in text and "--text-column" in text and "--vocab-classes" in text


# ----------------------------------------------------------------------------- Python
class FakeHFDataset:
    """The part of a Hugging Face `datasets.Dataset` that is read: column names, features (a
    ClassLabel has `names`) and column access."""

    class ClassLabel:
        def __init__(self, names):
            self.names = names

    def __init__(self, columns: dict, label_names: list[str]):
        self._columns = columns
        self.column_names = list(columns)
        self.features = {"text": object(), "label": self.ClassLabel(label_names)}

    def __getitem__(self, key):
        return list(self._columns[key])

    def __len__(self):
        return len(self._columns["text"])


TEXTS = ["a wonderful superb film", "an awful boring film", "a lovely film"]


@dataclass
class Py:
    item: str
    call: Callable[[dict, Path], Any]
    error: type | None
    fragments: tuple[str, ...]
    check: Callable[[Any], None] | None = None


def _apex(model_key: str, data: Any, **kw) -> Callable[[dict, Path], Any]:
    def call(e: dict, out: Path) -> Any:
        model = e[model_key] if not isinstance(e[model_key], Path) else str(e[model_key])
        return apex_run(model, data(e) if callable(data) else data, out, draws=2, sigmas=[0.1, 1.0], progress=False,
                        log=None, **kw)
    return call


def _pd():
    import pandas as pd

    return pd


PY = [
    Py("1 evaluation keeps its check", lambda e, o: check_label_space(
        27, TOPICS, Dataset("d", "text", ["a", "b"], np.array([0, 1]), ("negative", "positive")), "evaluate"),
       InputError, ("disagree", "the model's classes, in order: ['topic0'", "the data's: ['negative', 'positive']")),
    Py("1 probes need labels", lambda e, o: check_label_space(2, None, from_memory(TEXTS), "probe"), InputError,
       ("has no labels", "trains probes on them", "'label' column")),
    Py("1 a list of strings runs APEX", _apex("topics", TEXTS), None, (),
       lambda s: (s["results"]["clean_accuracy"] is None and s["results"]["n_inputs"] == 3) or pytest.fail(str(s))),
    Py("1 images without labels", lambda e, o: from_memory(np.zeros((4, 8, 8), np.uint8)), None, (),
       lambda ds: (ds.kind == "image" and ds.inputs.shape == (4, 1, 8, 8) and not ds.labelled) or pytest.fail()),
    Py("2 built-in data keeps its test split", lambda e, o: (inputs.split_of("vader-movies", None),
                                                              inputs.split_of("my.csv", None)), None, (),
       lambda r: r == ("test", "all") or pytest.fail(str(r))),
    Py("4 causal LM without --labels", _apex("lm", TEXTS), InputError,
       ("causal LM", "64 vocabulary entries", "--labels", "--vocab-classes")),
    Py("4 vocabulary classes when asked", lambda e, o: inputs.check(e["lm"], from_memory(TEXTS), "apex", log=None,
                                                                      vocab_classes=True), None, (),
       lambda space: (space.accuracy is False and space.n_model_classes == 64) or pytest.fail(str(space))),
    Py("5 apex_run maps string labels by name", _apex("posneg", {"text": TEXTS, "label": ["positive", "negative",
                                                                                           "positive"]}), None, (),
       lambda s: s["results"]["label_names"] == ["positive", "negative"] and list(s["label_space"]["present"]) == [0, 1]
       and s["results"]["clean_accuracy"] is not None or pytest.fail(str(s["label_space"]))),
    Py("5 a real mismatch names both orders", lambda e, o: inputs.check(
        apex_jax.load(str(e["other"])), inputs.align(apex_jax.load(str(e["other"])), from_memory(
            {"text": TEXTS, "label": ["positive", "negative", "positive"]})), "evaluate", log=None),
       InputError, ("the model's classes, in order: ['pos', 'neg']", "the data's: ['negative', 'positive']")),
    Py("6 a DataFrame with named columns", _apex("posneg", lambda e: _pd().DataFrame(
        {"sentence": TEXTS, "y": ["positive", "negative", "positive"]}), text_column="sentence", label_column="y"),
       None, (), lambda s: (s["results"]["n_inputs"] == 3 and s["results"]["clean_accuracy"] is not None
                            and s["results"]["split"] == "all") or pytest.fail(str(s["results"]))),
    Py("6 a dict of lists", lambda e, o: from_memory({"text": TEXTS, "label": [1, 0, 1]}), None, (),
       lambda ds: (list(ds.labels) == [1, 0, 1] and ds.label_names == ("0", "1")) or pytest.fail()),
    Py("6 a datasets.Dataset keeps its ClassLabel order", lambda e, o: from_memory(
        FakeHFDataset({"text": TEXTS, "label": [0, 1, 0]}, ["pos", "neg"])), None, (),
       lambda ds: (ds.label_names == ("pos", "neg") and list(ds.labels) == [0, 1, 0]) or pytest.fail(repr(ds))),
    Py("6 an unsupported object", lambda e, o: from_memory(42), InputError, ("cannot read int", "DataFrame",
                                                                             "list of strings")),
]


@pytest.mark.parametrize("case", PY, ids=[c.item for c in PY])
def test_python(case: Py, env, tmp_path):
    if case.error is not None:
        with pytest.raises(case.error) as err:
            case.call(env, tmp_path / "run")
        for fragment in case.fragments:
            assert fragment in str(err.value), (fragment, str(err.value))
        return
    result = case.call(env, tmp_path / "run")
    if case.check:
        case.check(result)
