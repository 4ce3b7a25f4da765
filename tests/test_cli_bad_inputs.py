"""Bad inputs at the command line and run-folder level: one table per command.

Every case runs `cli.main([...])` in-process on a tiny BERT and tiny CSVs and asserts the exit
status (2 for a bad input, 130 for Ctrl-C), fragments of a message that names the problem and
the valid choices, no traceback on stderr, and that a previous run in the folder is unchanged.
Then the run-folder rules: wrong-model reuse and mixed runs are refused, --overwrite equals a
fresh folder, the same command twice is byte-identical, a killed run stays "incomplete".
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from apex_jax import cli
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder

APEX_BASE = ["--n", "4", "--draws", "2", "--sigmas", "0.1,1", "--max-length", "16", "--quiet"]
PROBE_BASE = ["--n-train", "24", "--n", "8", "--steps", "10", "--max-length", "16"]
SILENCE_BASE = ["--n", "4", "--k", "10,50", "--random", "2", "--asymmetry-k", "50", "--layers", "1",
                "--max-length", "16", "--quiet"]
ATTACK_BASE = ["--n", "4", "--target", "1", "--max-length", "16"]


def tree_hash(folder: Path) -> dict:
    """{relative path: sha256} of every file under `folder` ({} if it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model, its corrupt variants, CSVs, and one finished run of every command."""
    root = tmp_path_factory.mktemp("cli_bad")
    e = {"root": root}
    e["model"] = tiny_bert_folder(root / "bert", resolve("minilm"), seed=1)
    e["task"] = sentiment_csv(root / "task.csv", 40)  # test split: 8 rows
    # the same model with its classifier's weight and bias negated
    from safetensors.numpy import load_file, save_file

    neg = root / "bert_neg"
    shutil.copytree(e["model"], neg)
    w = load_file(str(neg / "model.safetensors"))
    for k in ("classifier.weight", "classifier.bias"):
        w[k] = -w[k]
    save_file(w, str(neg / "model.safetensors"), metadata={"format": "pt"})
    e["model_neg"] = neg
    trunc = root / "bert_trunc"
    shutil.copytree(e["model"], trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    e["model_trunc"] = trunc
    badcfg = root / "bert_badcfg"
    shutil.copytree(e["model"], badcfg)
    (badcfg / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    e["model_badcfg"] = badcfg
    nan = root / "bert_nan"  # a broken model: non-finite weights give non-finite logits
    shutil.copytree(e["model"], nan)
    w = load_file(str(nan / "model.safetensors"))
    w["bert.pooler.dense.bias"] = np.full_like(w["bert.pooler.dense.bias"], np.nan)
    save_file(w, str(nan / "model.safetensors"), metadata={"format": "pt"})
    e["model_nan"] = nan
    mislabelled = root / "bert_id2label3"  # a 2-row head beside a 3-entry id2label
    shutil.copytree(e["model"], mislabelled)
    cfg = json.loads((mislabelled / "config.json").read_text())
    cfg["id2label"] = {"0": "a", "1": "b", "2": "c"}
    (mislabelled / "config.json").write_text(json.dumps(cfg))
    e["model_id2label"] = mislabelled
    e["model_vocab"] = tiny_bert_folder(root / "bert_vocab50", resolve("minilm"), seed=1, vocab_size=50)
    # data files
    e["latin1"] = root / "latin1.csv"
    e["latin1"].write_bytes("text,label\n".encode() + "caf\xe9 great one,1\n".encode("latin-1") * 10)
    three = root / "three.csv"
    three.write_text("text,label\n" + "".join(f"sentence {w} {i},{i % 3}\n"
                                               for i, w in enumerate(["a", "b", "c"] * 10)))
    e["three"] = three
    one = root / "one_class.csv"
    one.write_text("text,label\n" + "".join(f"sentence {i},neg\n" for i in range(30)))
    e["one_class"] = one
    long = root / "long.csv"
    long.write_text("text,label\n" + "".join(f"{'great ' * 30000}one,{i % 2}\n" for i in range(20)))
    e["long"] = long
    e["npz"] = root / "images.npz"
    np.savez(e["npz"], images=np.zeros((60, 1, 8, 8), np.float32), labels=np.arange(60) % 2)
    e["wide_ids"] = root / "wide_ids.csv"  # an id beyond the 32 bits ids key the noise with
    e["wide_ids"].write_text("id,text,label\n" + "".join(f"{i if i else 2**63},sentence {i},{i % 2}\n" for i in range(12)))
    e["file"] = root / "a_file.txt"
    e["file"].write_text("not a folder")
    # one finished run of every command: the "previous result" that must not change
    m, t = e["model"], e["task"]
    main = lambda argv: cli.main([str(a) for a in argv])  # noqa: E731
    assert main(["finetune", m, "--data", t, "--out", root / "ft", "--epochs", "1", "--batch-size", "8",
                     "--max-length", "16", "--n-train", "16"]) == 0
    assert main(["apex", m, "--data", t, "--out", root / "apex", *APEX_BASE]) == 0
    assert main(["probe", m, "--data", t, "--out", root / "probe", *PROBE_BASE]) == 0
    assert main(["silence", m, "--data", t, "--probe", root / "probe", "--out", root / "silence",
                     *SILENCE_BASE]) == 0
    assert main(["attack", m, "--data", t, "--probe", root / "probe", "--out", root / "attack",
                     *ATTACK_BASE]) == 0
    # a probe run with a corrupt checkpoint
    bad_probe = root / "probe_corrupt"
    shutil.copytree(root / "probe", bad_probe)
    for f in (bad_probe / "probes").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "json" not in f.name:
            f.write_bytes(b"\0" * 7)
    e["probe_corrupt"] = bad_probe
    return e


def _(key):  # a path from the environment, resolved at test time
    return ("env", key)


def _argv(env, argv):
    return [env[a[1]] if isinstance(a, tuple) and a[0] == "env" else a for a in argv]


# (case id, argv after the command name, expected status, message fragments); --out is the
# command's finished run unless the case sets its own
FINETUNE = [
    ("batch-size-0", ["--batch-size", "0"], 2, ["--batch-size", ">= 1"]),
    ("epochs-0", ["--epochs", "0"], 2, ["--epochs", ">= 1"]),
    ("max-length-0", ["--max-length", "0"], 2, ["--max-length", ">= 1"]),
    ("n-train-0", ["--n-train", "0"], 2, ["--n-train", ">= 1"]),
    ("n-train-too-many", ["--n-train", "1000"], 2, ["--n-train 1000", "28 examples", "<= 28"]),
    ("unknown-data", ["--data", "no-such-set"], 2, ["no-such-set", "vader-movies"]),
    ("non-utf8-csv", ["--data", _("latin1")], 2, ["latin1.csv", "UTF-8"]),
    ("malformed-config", ["--model", _("model_badcfg")], 2, ["config.json"]),
    ("corrupt-safetensors", ["--model", _("model_trunc")], 2, ["model.safetensors"]),
    ("out-is-file", ["--out", _("file")], 2, ["a_file.txt", "existing file"]),
    ("out-inside-file", ["--out", ("sub", "file")], 2, ["inside", "a file"]),
    ("out-unwritable", ["--out", "/proc/apex-jax-run"], 2, ["not writable"]),
    ("other-settings", ["--seed", "3"], 2, ["seed", "--overwrite"]),
    ("one-class", ["--data", _("one_class"), "--out", ("new", "ft_one_class")], 2, ["only class", "at least two"]),
    ("seed-negative", ["--seed=-1"], 2, ["--seed", "[0, 4294967295]"]),
]

APEX = [
    ("chunk-size-0", ["--chunk-size", "0"], 2, ["--chunk-size", ">= 1"]),
    ("chunk-size-neg", ["--chunk-size", "-1"], 2, ["--chunk-size", ">= 1"]),
    ("draws-0", ["--draws", "0"], 2, ["--draws", ">= 1"]),
    ("draws-huge", ["--draws", "1000000000000"], 2, ["--draws", "[1, 16777216]"]),
    ("id-beyond-32-bit", ["--data", _("wide_ids")], 2, ["wide_ids.csv:2", "id 9223372036854775808", "[0, 4294967295]"]),
    ("sweep-huge", ["--draws", "16000000", "--sigmas", "logspace:0.01:4:100", "--out", ("new", "apex_huge")], 2,
     ["6,400,000,000 perturbed forwards", "--yes"]),
    ("seed-negative", ["--seed=-1"], 2, ["--seed", "[0, 4294967295]", "got -1"]),
    ("seed-2^32", ["--seed", "4294967296"], 2, ["--seed", "[0, 4294967295]"]),
    ("seed-2^64+1", ["--seed", "18446744073709551617"], 2, ["--seed", "18446744073709551617"]),
    ("nan-model", ["--model", _("model_nan"), "--out", ("new", "apex_nan")], 2, ["not finite", "broken"]),
    ("tokenizer-mismatch", ["--model", _("model_vocab"), "--out", ("new", "apex_vocab")], 2,
     ["token id", "embedding table has 50 rows"]),
    ("id2label-mismatch", ["--model", _("model_id2label"), "--out", ("new", "apex_id2label")], 2,
     ["id2label names 3 classes", "2 rows"]),
    ("n-0", ["--n", "0"], 2, ["--n", ">= 1"]),
    ("n-too-many", ["--n", "100"], 2, ["n = 100", "the whole data set has 40", "n <= 40"]),  # a file: all of it
    ("max-length-0", ["--max-length", "0"], 2, ["--max-length", ">= 1"]),
    ("threshold-0", ["--threshold", "0"], 2, ["--threshold", "(0, 1]"]),
    ("threshold-1.5", ["--threshold", "1.5"], 2, ["--threshold", "(0, 1]"]),
    ("logspace-lo-gt-hi", ["--sigmas", "logspace:4:0.1:5"], 2, ["logspace:4:0.1:5", "0 < LO < HI"]),
    ("logspace-lo-0", ["--sigmas", "logspace:0:1:3"], 2, ["logspace:0:1:3", "0 < LO < HI"]),
    ("sigma-duplicates", ["--sigmas", "0.1,0.1,1"], 2, ["repeat", "once"]),
    ("sigma-negative", ["--sigmas=-1,2"], 2, [">= 0"]),
    ("bad-sites", ["--sites", "blocks.9.nothing"], 2, ["blocks.9.nothing"]),
    ("bad-split", ["--split", "dev"], 2, ["dev", "train"]),
    ("non-utf8-csv", ["--data", _("latin1")], 2, ["latin1.csv", "UTF-8"]),
    ("npz-on-text-model", ["--data", _("npz")], 2, ["image", "text"]),
    # 3-class data on a 2-class model is no bad input for APEX (no accuracy): tests/test_own_data.py
    ("corrupt-safetensors", ["--model", _("model_trunc")], 2, ["model.safetensors", "truncated"]),
    ("malformed-config", ["--model", _("model_badcfg")], 2, ["config.json"]),
    ("missing-model", ["--model", "/no/such/model"], 2, ["/no/such/model"]),
    ("out-is-file", ["--out", _("file")], 2, ["a_file.txt", "existing file"]),
    ("out-inside-file", ["--out", ("sub", "file")], 2, ["inside", "a file"]),
    ("out-unwritable", ["--out", "/proc/apex-jax-run"], 2, ["not writable"]),
    ("other-model", ["--model", _("model_neg")], 2, ["model_params_sha256", "--overwrite"]),
    ("other-draws", ["--draws", "3"], 2, ["draws", "--overwrite"]),
    ("other-command", ["--out", ("run", "probe")], 2, ["probe", "command", "--overwrite"]),
]

PROBE = [
    ("n-train-1-one-class", ["--n-train", "1"], 2, ["at least two classes"]),
    ("n-train-0", ["--n-train", "0"], 2, ["--n-train", ">= 1"]),
    ("n-too-many", ["--n", "100"], 2, ["n = 100", "n <= 8"]),
    ("steps-0", ["--steps", "0"], 2, ["--steps", ">= 1"]),
    ("max-length-0", ["--max-length", "0"], 2, ["--max-length", ">= 1"]),
    ("bad-layers", ["--layers", "17"], 2, ["17"]),
    ("npz-on-text-model", ["--data", _("npz")], 2, ["image", "text"]),
    ("non-utf8-csv", ["--data", _("latin1")], 2, ["latin1.csv", "UTF-8"]),
    ("corrupt-safetensors", ["--model", _("model_trunc")], 2, ["model.safetensors"]),
    ("out-is-file", ["--out", _("file")], 2, ["existing file"]),
    ("other-model", ["--model", _("model_neg")], 2, ["model_params_sha256"]),
]

SILENCE = [
    ("k-duplicates", ["--k", "10,10"], 2, ["repeat", "once"]),
    ("k-0", ["--k", "0,5"], 2, ["(0, 100]"]),
    ("k-101", ["--k", "101"], 2, ["(0, 100]"]),
    ("controls-unknown", ["--controls", "gradient"], 2, ["--controls", "attribution, mean", "'gradient'"]),
    ("controls-none-and-mean", ["--controls", "none,mean"], 2, ["--controls", "'none' alone"]),
    ("controls-mean-with-noise", ["--controls", "mean", "--mode", "noise"], 2, ["mean_ablation", "mode='zero'"]),
    ("random-1", ["--random", "1"], 2, ["--random", ">= 2"]),
    ("random-0", ["--random", "0"], 2, ["--random", ">= 2"]),
    ("random-absurd", ["--random", "1000000000"], 2, ["about 8,000,000,0", "more than 1e+09", "--yes"]),
    ("draws-0", ["--draws", "0"], 2, ["--draws", ">= 1"]),
    ("n-0", ["--n", "0"], 2, ["--n", ">= 1"]),
    ("n-too-many", ["--n", "100"], 2, ["n <= 8"]),
    ("max-length-0", ["--max-length", "0"], 2, ["--max-length", ">= 1"]),
    ("3-class-on-2-class", ["--data", _("three")], 2, ["labels [2]", "2 classes"]),
    ("npz-on-text-model", ["--data", _("npz")], 2, ["image", "text"]),
    ("missing-probe", ["--probe", "/no/such/probe"], 2, ["no probes", "apex-jax probe"]),
    ("corrupt-probe", ["--probe", _("probe_corrupt")], 2, ["probe_corrupt"]),
    ("corrupt-safetensors", ["--model", _("model_trunc")], 2, ["model.safetensors"]),
    ("out-is-file", ["--out", _("file")], 2, ["existing file"]),
    ("other-model", ["--model", _("model_neg")], 2, ["model_params_sha256"]),
    ("other-k", ["--k", "10,20"], 2, ["k", "--overwrite"]),
]

ATTACK = [
    ("target-5", ["--target", "5"], 2, ["--target 5", "2 classes", "0 (", "1 ("]),
    ("target-5-new-out", ["--target", "5", "--out", ("new", "attack_new")], 2, ["--target 5"]),
    ("target-neg", ["--target", "-1"], 2, ["--target -1", "2 classes"]),
    ("k-0", ["--k", "0"], 2, ["--k", "(0, 100]"]),
    ("k-150", ["--k", "150"], 2, ["--k", "(0, 100]"]),
    ("n-too-many", ["--n", "100"], 2, ["n <= 8"]),
    ("3-class-on-2-class", ["--data", _("three")], 2, ["labels [2]"]),
    ("missing-probe", ["--probe", "/no/such/probe"], 2, ["no probes"]),
    ("corrupt-probe", ["--probe", _("probe_corrupt")], 2, ["probe_corrupt"]),
    ("out-is-file", ["--out", _("file")], 2, ["existing file"]),
    ("other-target", ["--target", "0"], 2, ["target", "--overwrite"]),
]


def _command_argv(env, command, extra):
    """The command's base argv with the case's replacements (--model, --out, --data, --probe
    replace the defaults; other flags are appended, the last occurrence wins in argparse)."""
    extra = list(extra)
    opts = {}
    for key in ("--model", "--out", "--data", "--probe"):
        if key in extra:
            i = extra.index(key)
            opts[key] = extra[i + 1]
            del extra[i:i + 2]
    model = opts.get("--model", _("model"))
    out = opts.get("--out", ("run", command))
    if isinstance(out, tuple) and out[0] == "new":
        out = env["root"] / out[1]
    elif isinstance(out, tuple) and out[0] == "env":
        out = env[out[1]]
    elif isinstance(out, tuple) and out[0] == "sub":
        out = env[out[1]] / "sub"
    elif isinstance(out, tuple) and out[0] == "run":
        out = env["root"] / {"finetune": "ft"}.get(out[1], out[1])
    base = {"finetune": ["--epochs", "1", "--batch-size", "8", "--max-length", "16", "--n-train", "16"],
            "apex": APEX_BASE, "probe": PROBE_BASE, "silence": SILENCE_BASE, "attack": ATTACK_BASE}[command]
    argv = [command, model, "--data", opts.get("--data", _("task")), "--out", out]
    if command in ("silence", "attack"):
        argv += ["--probe", opts.get("--probe", env["root"] / "probe")]
    return _argv(env, argv + base + extra), out


TABLES = {"finetune": FINETUNE, "apex": APEX, "probe": PROBE, "silence": SILENCE, "attack": ATTACK}
CASES = [(cmd, *case) for cmd, table in TABLES.items() for case in table]
TALLY: dict = {}


@pytest.mark.parametrize("command,case,extra,status,fragments", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input(env, capsys, command, case, extra, status, fragments):
    argv, out = _command_argv(env, command, extra)
    out = Path(out)
    before = {f: tree_hash(env["root"] / f) for f in ("ft", "apex", "probe", "silence", "attack")}
    existed = out.exists()
    rc, _out, err = run_cli(argv, capsys)
    assert rc == status, (rc, err)
    assert err.startswith(f"apex-jax {command}: error: "), err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert {f: tree_hash(env["root"] / f) for f in before} == before  # no previous result changed
    if not existed and not str(out).startswith("/proc"):
        assert not out.exists()  # a refused run leaves no folder


def test_long_csv_field_loads(env, capsys):
    """A CSV field over 131,072 characters is an ordinary (long) document."""
    out = env["root"] / "long_run"
    rc, _o, err = run_cli(["apex", env["model"], "--data", env["long"], "--out", out, *APEX_BASE], capsys)
    assert rc == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_ctrl_c_is_130_and_leaves_incomplete_manifest(env, capsys, monkeypatch):
    import apex_jax.apex.run as apex_run_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(apex_run_mod, "run_apex", interrupted)
    out = env["root"] / "interrupted"
    rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE], capsys)
    assert rc == 130
    assert "interrupted; rerun the same command to resume" in err
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"
    monkeypatch.undo()
    # rerunning the same command resumes into a complete run
    rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE], capsys)
    assert rc == 0, err
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "complete" and "summary.json" in m["files"]


def test_killed_sweep_leaves_incomplete(env, capsys, monkeypatch):
    """A crash inside the sweep (after the manifest is written) leaves status "incomplete"."""
    import apex_jax.engine.sweep as sweep_mod

    def boom(*a, **k):
        raise RuntimeError("killed inside the sweep")

    monkeypatch.setattr(sweep_mod, "_accumulate", boom)
    out = env["root"] / "killed"
    with pytest.raises(RuntimeError, match="killed inside the sweep"):
        cli.main([str(a) for a in ["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE]])
    capsys.readouterr()
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "incomplete" and m["files"] == []  # it had written nothing of its own yet
    assert not (out / "summary.json").exists()


def test_corrupt_sweep_checkpoint(env, capsys):
    out = env["root"] / "apex_ckpt"
    argv = ["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE]
    assert run_cli(argv, capsys)[0] == 0
    ckpts = [p for p in (out / "sweep-checkpoints").rglob("*") if p.is_file() and p.stat().st_size > 0
             and p.name != "settings.json" and "json" not in p.name.lower() and "metadata" not in p.name.lower()]
    assert ckpts
    for p in ckpts:
        p.write_bytes(b"\0" * 5)
    rc, _o, err = run_cli(argv, capsys)
    assert rc == 2, err
    assert "sweep-checkpoints" in err


def _fresh_vs_overwrite(env, capsys, command, base, files):
    """`command` with the other model into a reused folder: refused and unchanged; with
    --overwrite, equal to a fresh folder; the same command twice: byte-identical."""
    root = env["root"]
    reused = root / f"{command}_reuse"
    fresh = root / f"{command}_fresh"
    if command == "silence" and not (root / "probe_neg").exists():  # silence reads a probe run of its own model
        assert run_cli(["probe", env["model_neg"], "--data", env["task"], "--out", root / "probe_neg", *PROBE_BASE],
                       capsys)[0] == 0

    def argv(model, out, *more):
        probe = (["--probe", root / ("probe_neg" if model == env["model_neg"] else "probe")]
                 if command == "silence" else [])
        return [command, model, "--data", env["task"], *probe, "--out", out, *base, *more]

    assert run_cli(argv(env["model"], reused), capsys)[0] == 0
    before = tree_hash(reused)
    rc, _o, err = run_cli(argv(env["model_neg"], reused), capsys)
    assert rc == 2 and "model_params_sha256" in err and "--overwrite" in err
    assert tree_hash(reused) == before
    rc, _o, err = run_cli(argv(env["model_neg"], reused, "--overwrite"), capsys)
    assert rc == 0, err
    assert run_cli(argv(env["model_neg"], fresh), capsys)[0] == 0
    for f in files:
        assert (reused / f).read_bytes() == (fresh / f).read_bytes(), f
    # stale sweep checkpoints of the overwritten run are gone
    assert len(list((reused / "sweep-checkpoints").iterdir())) == len(list((fresh / "sweep-checkpoints").iterdir()))
    m = json.loads((reused / "run.json").read_text())
    assert m["status"] == "complete" and m["command"] == command
    assert m["settings"]["model"] == str(env["model_neg"])
    # same command again: succeeds, byte-identical results
    first = {f: (fresh / f).read_bytes() for f in files}
    assert run_cli(argv(env["model_neg"], fresh), capsys)[0] == 0
    assert {f: (fresh / f).read_bytes() for f in files} == first


def test_apex_wrong_model_reuse(env, capsys):
    _fresh_vs_overwrite(env, capsys, "apex", APEX_BASE, ["samples.csv", "summary.json"])


def test_silence_wrong_model_reuse(env, capsys):
    _fresh_vs_overwrite(env, capsys, "silence", SILENCE_BASE, ["silencing.csv", "controls.csv", "summary.json"])


def test_manifest_and_label_space_recorded(env):
    m = json.loads((env["root"] / "apex" / "run.json").read_text())
    assert m["format"] == 2 and m["command"] == "apex" and m["status"] == "complete"
    assert len(m["settings"]["model_params_sha256"]) == 64 and m["settings"]["draws"] == 2
    assert {"samples.csv", "summary.json", "timing.json"} <= set(m["files"])
    assert len(m["sweep_checkpoints"]) == 1
    s = json.loads((env["root"] / "apex" / "summary.json").read_text())
    assert s["settings"]["max_length"] == 16
    assert s["label_space"]["present"] == [0, 1]
    for cmd in ("probe", "silence", "attack", "ft"):
        assert json.loads((env["root"] / cmd / "run.json").read_text())["status"] == "complete"


def test_probe_of_another_task(env, capsys):
    """Probing another task's labels is legitimate: 3-class labels on a 2-class model."""
    out = env["root"] / "probe3"
    rc, _o, err = run_cli(["probe", env["model"], "--data", env["three"], "--out", out, "--n-train", "18",
                           "--n", "6", "--steps", "5", "--max-length", "16"], capsys)
    assert rc == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["label_space"]["present"] == [0, 1, 2]
    assert "test_f1_class_2" in s["results"]["probes"][0]


def test_progress_is_on_unless_quiet(monkeypatch, capsys):
    """The CLI asks the run layer for progress (a bar on a terminal, log lines off one:
    tests/test_progress.py) unless --quiet."""
    from apex_jax.errors import InputError

    seen = []

    def layer(*args, progress, **kw):
        seen.append(progress)
        raise InputError("stop here")

    monkeypatch.setitem(cli.RUN_LAYERS, "apex", layer)
    for quiet in ([], ["--quiet"]):
        assert cli.main(["apex", "m", "--data", "d", "--out", "o", *quiet]) == 2
    assert seen == [True, False] and "stop here" in capsys.readouterr().err


def test_compile_cache_flag(env, capsys, monkeypatch, tmp_path):
    """Every command enables the compile cache unless --no-compile-cache or the env var."""
    calls = []
    monkeypatch.setattr(cli, "enable_compile_cache", lambda *a, **k: calls.append(1))
    argv = ["apex", "/no/such/model", "--data", str(env["task"]), "--out", str(tmp_path / "x")]
    monkeypatch.delenv("APEX_JAX_NO_COMPILE_CACHE", raising=False)
    assert run_cli(argv, capsys)[0] == 2 and calls == [1]
    assert run_cli(["--no-compile-cache", *argv], capsys)[0] == 2 and calls == [1]
    monkeypatch.setenv("APEX_JAX_NO_COMPILE_CACHE", "1")
    assert run_cli(argv, capsys)[0] == 2 and calls == [1]


def test_draws_not_a_multiple_of_the_step(env, capsys):
    """K = 3 (not a multiple of the automatic draws per step) finishes: timing.json, plots, manifest."""
    out = env["root"] / "draws3"
    argv = ["apex", env["model"], "--data", env["task"], "--out", out, "--n", "4", "--draws", "3",
            "--sigmas", "0.1,1", "--max-length", "16", "--quiet"]
    rc, _o, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert json.loads((out / "timing.json").read_text())["perturbed_forwards"] == 4 * 2 * 3
    m = json.loads((out / "run.json").read_text())
    assert m["status"] == "complete" and "consistency_curves.png" in m["files"]


# ----------------------------------------------------------------------------- ownership, one writer
def test_foreign_files_are_never_listed_or_removed(env, capsys):
    """A folder holding files no run wrote is refused, with or without --overwrite, and keeps
    every file; so an --overwrite can never delete a file apex-jax did not write."""
    out = env["root"] / "user_folder"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.bin").write_bytes(b"\x01\x02")
    before = tree_hash(out)
    for extra in ([], ["--overwrite"]):
        rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE, *extra],
                              capsys)
        assert rc == 2 and "notes.txt" in err and "did not write" in err, err
        assert tree_hash(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]  # no lock file left behind


def test_a_run_lists_only_what_it_wrote(env, capsys):
    """The manifest lists the run's own entries; a file added to the folder later is foreign:
    the next --overwrite is refused and the file survives."""
    out = env["root"] / "owned"
    argv = ["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE]
    assert run_cli(argv, capsys)[0] == 0
    m = json.loads((out / "run.json").read_text())
    assert set(m["files"]) == {p.name for p in out.iterdir() if not p.name.startswith(".")} - {
        "run.json", "sweep-checkpoints"}
    (out / "later.txt").write_text("added by hand")
    rc, _o, err = run_cli([*argv, "--draws", "3", "--overwrite"], capsys)
    assert rc == 2 and "later.txt" in err
    assert (out / "later.txt").read_text() == "added by hand"


def test_an_old_manifest_listing_foreign_files_protects_them(env, capsys):
    """Manifests of format 1 listed every entry of the folder; their lists are trusted only for
    the names apex-jax writes, so the user's files they listed are never deleted."""
    out = env["root"] / "old_format"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "samples.csv").write_text("id\n")
    (out / "run.json").write_text(json.dumps({"format": 1, "command": "apex", "status": "complete",
                                              "settings": {"draws": 99}, "files": ["notes.txt", "samples.csv"]}))
    rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE, "--overwrite"],
                          capsys)
    assert rc == 2 and "notes.txt" in err, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "samples.csv").exists()


@pytest.mark.parametrize("where", ["model", "inside-model", "contains-data"])
def test_out_apart_from_the_inputs(env, capsys, tmp_path, where):
    """--out may not be an input, lie inside one or contain one (it would write over, or with
    --overwrite delete, what it reads)."""
    model = Path(env["model"])
    if where == "contains-data":
        folder = tmp_path / "project"
        folder.mkdir()
        data = folder / "task.csv"
        data.write_bytes(Path(env["task"]).read_bytes())
        out, want = folder, "contains the input"
    else:
        data = env["task"]
        out, want = (model, "is the input") if where == "model" else (model / "run", "lies inside the input")
    before = tree_hash(model)
    rc, _o, err = run_cli(["apex", model, "--data", data, "--out", out, *APEX_BASE], capsys)
    assert rc == 2 and want in err, err
    assert tree_hash(model) == before and not (model / "run").exists()


def test_finetune_never_writes_into_its_model(env, capsys):
    """`finetune X/model --out X --overwrite` once deleted its own input model: refused."""
    model = Path(env["model"])
    before = tree_hash(model)
    rc, _o, err = run_cli(["finetune", model, "--data", env["task"], "--out", model.parent, "--overwrite",
                           "--epochs", "1", "--n-train", "16", "--max-length", "16"], capsys)
    assert rc == 2 and "contains the input" in err, err
    assert tree_hash(model) == before


def test_a_second_writer_is_refused(env, capsys):
    """While one run holds its folder, another run into it (here: the same command) is refused
    with the holder's pid; the lock goes with the run."""
    import os

    from apex_jax import runs

    out = env["root"] / "locked"
    with runs.open_run(out, "apex", {"x": 1}) as held:
        rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE], capsys)
        assert rc == 2 and f"pid {os.getpid()}" in err and "another run" in err, err
        assert json.loads((out / "run.json").read_text())["settings"] == {"x": 1}
        held.complete(log=None)
    # released: the folder now holds a finished run of other settings, refused as such
    rc, _o, err = run_cli(["apex", env["model"], "--data", env["task"], "--out", out, *APEX_BASE], capsys)
    assert rc == 2 and "settings differ" in err


def test_the_same_inputs_spelled_differently_resume(env, capsys, tmp_path):
    """Settings compare by content: the same model folder through a symlink or with a trailing
    slash is the same run (it resumes instead of being refused)."""
    out = env["root"] / "spelled"
    link = tmp_path / "model-link"
    link.symlink_to(Path(env["model"]).resolve())
    for model in (env["model"], f"{env['model']}/", link):
        rc, _o, err = run_cli(["apex", model, "--data", env["task"], "--out", out, *APEX_BASE], capsys)
        assert rc == 0, (model, err)


def test_a_diverged_fine_tune_saves_nothing(env, capsys):
    """A fine-tune whose loss goes non-finite stops there (exit 2, the step named) and saves no
    model (nor leaves a folder: it wrote nothing of its own)."""
    out = env["root"] / "ft_diverged"
    rc, _o, err = run_cli(["finetune", env["model"], "--data", env["task"], "--out", out, "--lr", "1e10",
                           "--epochs", "1", "--batch-size", "4", "--n-train", "28", "--max-length", "16"], capsys)
    assert rc == 2 and "training diverged" in err and "nothing was saved" in err, err
    assert not out.exists()  # it wrote nothing of its own: no folder left behind


def test_silence_and_attack_check_the_probe_run(env, capsys, tmp_path):
    """silence/attack refuse a probe run of other weights, an unfinished one, and one whose
    classes are not the model's in the model's order (its class c would not be the model's c)."""
    root = env["root"]
    base = {"silence": SILENCE_BASE, "attack": ATTACK_BASE}
    named = tmp_path / "bert_named"  # the same weights, with class names
    shutil.copytree(env["model"], named)
    cfg = json.loads((named / "config.json").read_text())
    cfg.update(id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    (named / "config.json").write_text(json.dumps(cfg))
    for command in ("silence", "attack"):
        def run(probe, model=env["model"]):
            return run_cli([command, model, "--data", env["task"], "--probe", probe, "--out",
                            tmp_path / f"{command}-{probe.name}", *base[command]], capsys)
        rc, _o, err = run(root / "probe", env["model_neg"])
        assert rc == 2 and "other weights" in err, err
        unfinished = tmp_path / "probe_unfinished"
        if not unfinished.exists():
            shutil.copytree(root / "probe", unfinished)
            m = json.loads((unfinished / "run.json").read_text())
            (unfinished / "run.json").write_text(json.dumps({**m, "status": "incomplete"}))
        rc, _o, err = run(unfinished)
        assert rc == 2 and "incomplete probe run" in err, err
        swapped = tmp_path / "probe_swapped"
        if not swapped.exists():
            shutil.copytree(root / "probe", swapped)
            m = json.loads((swapped / "run.json").read_text())
            m["settings"]["classes"] = ["positive", "negative"]
            (swapped / "run.json").write_text(json.dumps(m))
        rc, _o, err = run(swapped, named)
        assert rc == 2 and "class c" in err, err


def test_sigterm_stops_resumable_like_ctrl_c(monkeypatch, capsys):
    """SIGTERM (a scheduler's stop) exits 143 with the resume hint, not a silent kill."""
    import os
    import signal

    def layer(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setitem(cli.RUN_LAYERS, "apex", layer)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["apex", "m", "--data", "d", "--out", "o"]) == 143
    assert "terminated; rerun the same command to resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def test_csv_row_with_an_unquoted_comma_is_named(env, capsys, tmp_path):
    bad = tmp_path / "comma.csv"
    bad.write_text("text,label\nfine film,1\nloved it, a lot,1\nawful,0\n")
    rc, _o, err = run_cli(["apex", env["model"], "--data", bad, "--out", tmp_path / "run", *APEX_BASE], capsys)
    assert rc == 2 and "comma.csv:3" in err and "quote" in err, err


def test_tilde_out_is_the_home_folder(monkeypatch, tmp_path):
    from apex_jax import runs

    monkeypatch.setenv("HOME", str(tmp_path))
    assert runs.check_out("~/x") == tmp_path / "x"


def test_report_on_folders_apex_jax_did_not_write(capsys, tmp_path):
    """A foreign summary.json is no apex run with numbers; a truncated run.json is not "complete"."""
    from apex_jax import run_page

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "summary.json").write_text('{"results": 5}')
    text = run_page.build_page(foreign)
    assert "apex-jax <span class=\"cmd\">unknown</span>" in text
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "run.json").write_text('{"format": 2, "command": "apex", "sta')
    (truncated / "summary.json").write_text('{"kind": "apex", "results": {}}')
    text = run_page.build_page(truncated)
    assert "unreadable run.json" in text and ">complete<" not in text
    # report writes its page (marked as apex-jax's, so a second report rewrites it) but never over
    # an index.html of someone else's
    assert run_cli(["report", foreign], capsys)[0] == 0
    assert run_page.GENERATOR in (foreign / "index.html").read_text()
    assert run_cli(["report", foreign], capsys)[0] == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "summary.json").write_text('{"results": {}}')
    (site / "index.html").write_text("<html><title>my site</title></html>")
    rc, _, err = run_cli(["report", site], capsys)
    assert rc == 2 and "was not written by apex-jax" in err and "move it away" in err, err
    assert (site / "index.html").read_text() == "<html><title>my site</title></html>"


def test_held_out_copies_of_training_texts_are_left_out(env, capsys, tmp_path):
    """A third of the texts twice: val/test copies of a training text are left out and counted
    (the split rule itself is unchanged); --keep-duplicates keeps them and says they count as
    unseen; held-out parts made of copies only are refused."""
    rows = [f"sentence number {i},{i % 2}\n" for i in range(60)]
    twice = tmp_path / "twice.csv"
    twice.write_text("text,label\n" + "".join(rows + rows[:20]))
    argv = ["finetune", env["model"], "--data", twice, "--epochs", "1", "--batch-size", "8", "--max-length", "16",
            "--quiet"]
    from apex_jax.data import load_dataset, split_dataset

    parts = split_dataset(load_dataset(str(twice)), seed=0)
    seen = set(map(str, parts["train"].inputs))
    copies = {k: sum(str(t) in seen for t in parts[k].inputs) for k in ("val", "test")}
    assert copies["val"] > 0 and copies["test"] > 0
    rc, out, err = run_cli([*argv, "--out", tmp_path / "dedup"], capsys)
    assert rc == 0, err
    assert f"left out {copies['val']} val and {copies['test']} test examples" in out
    r = json.loads((tmp_path / "dedup" / "summary.json").read_text())["results"]
    assert r["held_out_duplicates_left_out"] == copies
    assert r["n_test"] == len(parts["test"]) - copies["test"] and r["n_val"] == len(parts["val"]) - copies["val"]
    rc, out, err = run_cli([*argv, "--keep-duplicates", "--out", tmp_path / "kept"], capsys)
    assert rc == 0 and f"{copies['test']} of the {len(parts['test'])} test inputs also occur" in out, out
    r = json.loads((tmp_path / "kept" / "summary.json").read_text())["results"]
    assert r["n_test"] == len(parts["test"]) and r["held_out_duplicates_left_out"] is None
    only_copies = tmp_path / "only_copies.csv"
    only_copies.write_text("text,label\n" + "".join(rows[:10] * 6))
    rc, _, err = run_cli([*argv[:3], only_copies, *argv[4:], "--out", tmp_path / "copies"], capsys)
    assert rc == 2 and "repeats a training text" in err and "--keep-duplicates" in err, err
    assert not (tmp_path / "copies").exists()
