"""Issue 23, items 7-9: notebook friction, head-less models, defaults that fit small runs.

One table, one row per case: what is given -> the exception (or CLI exit status) -> a fragment
of its message -> what comes out. Everything runs on a tiny BERT (d_model 16, 2 layers) with
MiniLM's tokenizer, a head-less copy of it, and small CSVs.

    7  capture as a spec string / None; global_ranking of a ProbeSet; probe_run's ProbeResult;
       silence_run / attack_run on probes in memory (provenance checked); run_apex's short form
    8  probe on a model without a classifier head
    9  probe and fine-tune defaults on small data
"""

from __future__ import annotations

import dataclasses
import doctest
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import apex_jax
from apex_jax import cli, data, demo, training
from apex_jax.apex import analysis
from apex_jax.errors import InputError
from apex_jax.models.loading import resolve
from apex_jax.settings import DemoSettings
from apex_jax.synapse import ProbeResult, attack_run, global_ranking, probe_run, silence_run
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder

SMALL = {"max_length": 16, "progress": False, "log": None}
SILENCE = {"n": 4, "k": "10,50", "random": 2, "asymmetry_k": 50, "layers": "1", "controls": "none", **SMALL}


def headless_bert_folder(folder: Path, tokenizer_folder: Path, seed: int = 0) -> Path:
    """An HF BertModel folder (a pretrained encoder: no classifier) with MiniLM's tokenizer."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=64)
    T.BertModel(cfg).save_pretrained(str(folder))
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_folder / f).is_file():
            shutil.copy(tokenizer_folder / f, folder / f)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    e = {"root": root}
    e["model_dir"] = tiny_bert_folder(root / "bert", resolve("minilm"), seed=1)
    e["encoder_dir"] = headless_bert_folder(root / "encoder", resolve("minilm"))
    e["ten"] = sentiment_csv(root / "ten.csv", 10)  # splits: 7 train / 1 val / 2 test
    e["task"] = sentiment_csv(root / "task.csv", 40)  # test split: 8 rows
    e["big"] = sentiment_csv(root / "big.csv", 3000)  # val 300, test 600
    e["model"] = apex_jax.load(e["model_dir"])
    e["batch"] = e["model"].encode(["a great one", "an awful one", "what a film"], max_length=16)
    e["probe"] = probe_run(e["model"], str(e["task"]), root / "probe", n_train=24, n=8, steps=10, **SMALL)
    return e


def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def _other_weights(e):
    """The in-memory probes, recorded as probing other weights."""
    return dataclasses.replace(e["probe"]["result"].probes, model_params_sha256="0" * 64)


def _three_class_probes(e):
    probes = e["probe"]["result"].probes
    return dataclasses.replace(probes, n_classes=3, classes=None)


def _demo_finetune_kwargs(monkeypatch, tmp, n_train):
    """The keywords the demo gives finetune_run (stopped there)."""
    seen = {}

    def stop(*args, **kw):
        seen.update(kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.assets, "fetch_assets", lambda names: {})
    monkeypatch.setattr(demo, "finetune_run", stop)
    with pytest.raises(KeyboardInterrupt):
        demo.demo_run(tmp / f"demo{n_train}", DemoSettings(n_train=n_train), log=lambda s: None)
    return seen


def _doctest(fn) -> tuple[int, int]:
    """(failed, attempted) of the examples in `fn`'s docstring."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(fn, fn.__name__, globs={}):
        runner.run(test)
    return tuple(runner.summarize(verbose=False))


def _summary(path: Path) -> dict:
    return json.loads((Path(path) / "summary.json").read_text())


# Each row: (id, action(env, tmp, capsys, monkeypatch), error, fragment, check(output)).
# error: an exception type, an exit status (CLI rows; the fragment is in stderr), or None.
ROWS = [
    # ---- 7: notebook friction
    ("7 capture='all' is the preset, not 'a','l','l'",
     lambda e, *_: sorted(e["model"].apply(e["model"].params, e["batch"], capture="all").captured),
     None, None, lambda out: out == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "hook_embed"]),
    ("7 capture=<one site name>",
     lambda e, *_: list(e["model"].forward(e["batch"], capture="blocks.1.mlp.hook_post").captured),
     None, None, lambda out: out == ["blocks.1.mlp.hook_post"]),
    ("7 capture=None captures nothing",
     lambda e, *_: e["model"].apply(e["model"].params, e["batch"], capture=None),
     None, None, lambda out: out.captured == {} and out.logits.shape == (3, 2)),
    ("7 capture of an unknown site",
     lambda e, *_: e["model"].apply(e["model"].params, e["batch"], capture="nope"),
     ValueError, "unknown site(s) ['nope']", None),
    ("7 global_ranking(ProbeSet) says what it takes",
     lambda e, *_: global_ranking(e["probe"]["result"].probes),
     InputError, "ranks the neurons of ONE probe: pass a Probe or its weights W", None),
    ("7 global_ranking(Probe) ranks its W",
     lambda e, *_: (global_ranking(e["probe"]["result"].probes["hook_embed"]),
                    global_ranking(e["probe"]["result"].probes["hook_embed"].W)),
     None, None, lambda out: np.array_equal(out[0].order, out[1].order) and out[0].scores.shape == (16,)),
    ("7 probe_run returns a ProbeResult with a compact repr",
     lambda e, *_: e["probe"]["result"],
     None, None, lambda out: isinstance(out, ProbeResult) and repr(out).startswith(
         "ProbeResult(sites=3 [hook_embed, blocks.0.hook_resid_post, …], classes=2, n_train=24, n_test=8")
     and out.head is not None and out.probes.model_params_sha256 is not None and len(out.table()) == 5),
    ("7 silence_run on the ProbeResult in memory",
     lambda e, tmp, *_: silence_run(e["model"], str(e["task"]), e["probe"]["result"], tmp / "s1", **SILENCE),
     None, None, lambda out: out["settings"]["probe"] == "<in memory>" and out["settings"]["n"] == 4
     and [x["site"] for x in out["results"]["layers"]] == ["blocks.1.hook_resid_post"]),
    ("7 silence_run on probe_run's dict equals the folder's run",
     lambda e, tmp, *_: (silence_run(e["model"], str(e["task"]), e["probe"], tmp / "s2", **SILENCE),
                         silence_run(e["model"], str(e["task"]), e["root"] / "probe", tmp / "s3", **SILENCE)),
     None, None, lambda out: out[0]["results"]["layers"] == out[1]["results"]["layers"]),
    ("7 in-memory probes of other weights are refused",
     lambda e, tmp, *_: silence_run(e["model"], str(e["task"]), _other_weights(e), tmp / "s4", **SILENCE),
     InputError, "probed other weights", None),
    ("7 in-memory probes of another class count are refused",
     lambda e, tmp, *_: silence_run(e["model"], str(e["task"]), _three_class_probes(e), tmp / "s5", **SILENCE),
     InputError, "has probes of 3 classes, the model has 2", None),
    ("7 a probe that is none of the forms",
     lambda e, tmp, *_: silence_run(e["model"], str(e["task"]), 42, tmp / "s6", **SILENCE),
     InputError, "probe must be a probe run folder, the dict probe_run returns", None),
    ("7 attack_run on the ProbeResult in memory",
     lambda e, tmp, *_: attack_run(e["model"], str(e["task"]), e["probe"]["result"], tmp / "a1", n=4, target=1,
                                   **SMALL),
     None, None, lambda out: out["settings"]["probe"] == "<in memory>" and out["results"]["target"] == 1),
    ("7 run_apex(model, batch, sigmas) equals the explicit form",
     lambda e, *_: (apex_jax.run_apex(e["model"], e["batch"], [0.5, 4.0], draws=4, progress=False),
                    apex_jax.run_apex(e["model"], e["model"].params, e["batch"], [0, 1, 2], [0.5, 4.0], draws=4,
                                      progress=False)),
     None, None, lambda out: np.array_equal(out[0].consistency, out[1].consistency)
     and list(out[0].ids) == [0, 1, 2]),
    ("7 run_apex without sigmas",
     lambda e, *_: apex_jax.run_apex(e["model"], e["model"].params, e["batch"]),
     TypeError, "sigmas is missing", None),
    ("7 run_apex's docstring example runs",
     lambda *_: _doctest(analysis.run_apex), None, None, lambda out: out == (0, 7)),
    # ---- 8: head-less models
    ("8 probe a head-less encoder: every block, no head site",
     lambda e, tmp, capsys, _m: (run_cli(["probe", e["encoder_dir"], "--data", e["task"], "--out", tmp / "p8",
                                          "--steps", "5", "--max-length", "16"], capsys), _summary(tmp / "p8")),
     None, None, lambda out: out[0][0] == 0
     and [p["site"] for p in out[1]["results"]["probes"]] == ["hook_embed", "blocks.0.hook_resid_post",
                                                              "blocks.1.hook_resid_post", "concat"]
     and "no classifier head" in out[1]["settings"]["skipped"]["head.hook_cls"]
     and out[1]["settings"]["head_probe"] is False),
    ("8 naming the head site of a head-less encoder",
     lambda e, tmp, capsys, _m: run_cli(["probe", e["encoder_dir"], "--data", e["task"], "--out", tmp / "p8b",
                                         "--layers", "1,head.hook_cls", "--steps", "5"], capsys),
     2, "names head.hook_cls, but", None),
    ("8 attack on probes without a classifier-input probe",
     lambda e, tmp, *_: attack_run(e["model"], str(e["task"]), (e["probe"]["result"].probes, None), tmp / "a8",
                                   n=4, **SMALL),
     InputError, "have no classifier-input (head.hook_cls) probe", None),
    # ---- 9: defaults that fit small runs
    ("9 probe on a 10-row file with n unset uses what there is",
     lambda e, tmp, capsys, _m: run_cli(["probe", e["model_dir"], "--data", e["ten"], "--out", tmp / "p9",
                                         "--steps", "5", "--max-length", "16"], capsys),
     None, None, lambda out: out[0] == 0 and "probes on 7 train / 2 test inputs" in out[1]),
    ("9 an explicit n larger than the data is refused",
     lambda e, tmp, capsys, _m: run_cli(["probe", e["model_dir"], "--data", e["ten"], "--out", tmp / "p9b",
                                         "--n", "50", "--steps", "5"], capsys),
     2, "n = 50 examples asked", None),
    ("9 silence on a 10-row file with n unset",
     lambda e, tmp, capsys, _m: run_cli(["silence", e["model_dir"], "--data", e["ten"], "--probe",
                                         e["root"] / "probe", "--out", tmp / "s9", "--split", "test", "--k", "50",
                                         "--random", "2",
                                         "--layers", "1", "--max-length", "16", "--quiet"], capsys),
     None, None, lambda out: out[0] == 0 and "silencing: 2 inputs" in out[1]),
    ("9 finetune --n-train 8 validates and tests on max(256, 8)",
     lambda e, tmp, capsys, _m: (run_cli(["finetune", e["model_dir"], "--data", e["big"], "--out", tmp / "f9",
                                          "--n-train", "8", "--epochs", "1", "--max-length", "16",
                                          "--keep-duplicates"], capsys),  # the size rule alone
                                 json.loads((tmp / "f9" / "run.json").read_text())["settings"],
                                 _summary(tmp / "f9")["results"]),
     None, None, lambda out: out[0][0] == 0 and (out[1]["n_val"], out[1]["n_test"]) == (256, 256)
     and (out[2]["n_val"], out[2]["n_test"]) == (256, 256) and "validating on 256" in out[0][1]),
    ("9 finetune --n-val larger than the val split",
     lambda e, tmp, capsys, _m: run_cli(["finetune", e["model_dir"], "--data", e["ten"], "--out", tmp / "f9b",
                                         "--n-val", "5"], capsys),
     2, "--n-val 5, but that split has 1 examples", None),
    ("9 held_out: unset without n_train is the whole split; explicit n is taken",
     lambda e, *_: [len(training.held_out(data.load_dataset(str(e["big"])), n, nt, "--n-val"))
                    for n, nt in ((None, None), (None, 8), (None, 1000), (100, 8))],
     None, None, lambda out: out == [3000, 256, 1000, 100]),
    ("9 the demo keeps validating on the whole splits when --n-train is set",
     lambda e, tmp, _c, monkeypatch: (_demo_finetune_kwargs(monkeypatch, tmp, 64),
                                      data.split_dataset(data.load_dataset("vader-movies"))),
     None, None, lambda out: (out[0]["n_val"], out[0]["n_test"]) == (len(out[1]["val"]), len(out[1]["test"]))
     and out[0]["n_val"] > 256 and out[0]["n_train"] == 64),
    ("9 the demo's default fine-tune is called as before",
     lambda e, tmp, _c, monkeypatch: _demo_finetune_kwargs(monkeypatch, tmp, None),
     None, None, lambda out: "n_val" not in out and "n_test" not in out and out["n_train"] is None),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_notebook(row, env, tmp_path, capsys, monkeypatch):
    _id, action, error, fragment, check = row
    if isinstance(error, int):
        rc, out, err = action(env, tmp_path, capsys, monkeypatch)
        assert rc == error and fragment in err, (rc, err)
        return
    if error is not None:
        with pytest.raises(error) as info:
            action(env, tmp_path, capsys, monkeypatch)
        assert fragment in str(info.value), str(info.value)
        return
    out = action(env, tmp_path, capsys, monkeypatch)
    assert check(out), out


def test_probe_run_reads_a_list_of_strings_as_data(env, tmp_path):
    """A list of two strings is data, not a (train, test) pair: too few to split; more of them are
    unlabelled, which probes refuse (they need labels)."""
    with pytest.raises(InputError, match="has 2 examples; splitting needs at least 3"):
        probe_run(env["model_dir"], ["a fine film", "a dull film"], tmp_path / "p", steps=1)
    with pytest.raises(InputError, match="label") as err:
        probe_run(env["model_dir"], [f"film number {i}" for i in range(12)], tmp_path / "p", steps=1)
    assert "unpack" not in str(err.value) and not (tmp_path / "p").exists()
