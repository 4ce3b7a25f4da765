"""The apex-jax command: finetune -> saved HF folder -> noise probe, and its error path."""

from __future__ import annotations

import csv
import json

import numpy as np

from apex_jax import cli
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder


def test_finetune_then_noise(tmp_path, capsys):
    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"))
    task = sentiment_csv(tmp_path / "task.csv", 60)
    run = tmp_path / "run"
    assert cli.main(["finetune", str(folder), "--data", str(task), "--out", str(run), "--epochs", "1",
                     "--batch-size", "8"]) == 0
    metrics = json.loads((run / "summary.json").read_text())["results"]
    left_out = sum((metrics["held_out_duplicates_left_out"] or {}).values())  # held-out copies of train texts
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] + left_out == 60
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert "held-out test accuracy" in capsys.readouterr().out

    probe = tmp_path / "probe"
    argv = ["apex", str(run / "model"), "--data", str(task), "--out", str(probe), "--n", "5",
            "--draws", "4", "--sigmas", "0,2", "--quiet"]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader(open(probe / "samples.csv")))
    assert len(rows) == 5
    assert all(float(r["kept_sigma_0"]) == 1.0 for r in rows)
    summary = json.loads((probe / "summary.json").read_text())
    assert json.loads((probe / "timing.json").read_text())["perturbed_forwards"] == 5 * 2 * 4
    np.testing.assert_allclose(summary["results"]["mean_consistency"][1],
                               np.mean([float(r["kept_sigma_2"]) for r in rows]), rtol=1e-5)
    for png in ("consistency_curves", "escape_sigma_hist", "transitions", "large_sigma_shares"):
        assert (probe / f"{png}.png").stat().st_size > 1000
    first = (probe / "summary.json").read_bytes(), (probe / "samples.csv").read_bytes()
    assert cli.main(argv) == 0  # rerun: identical files (resumed from the finished checkpoint)
    assert ((probe / "summary.json").read_bytes(), (probe / "samples.csv").read_bytes()) == first


def test_sites_lists_every_site(capsys):
    assert cli.main(["sites", "minilm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "hook_embed" in lines and "blocks.5.mlp.hook_post" in lines
    assert len(lines) == 1 + 1 + 6 * 12  # header, hook_embed, 12 sites per block, no head


def test_bad_data_name_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["finetune", "minilm", "--data", "no-such-set", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-set" in err and "vader-movies" in err


def test_probe_silence_attack(tmp_path, capsys):
    """SYNAPSE end to end on the tiny BERT: files, internal consistency, deterministic reruns."""
    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"), seed=2)
    task = sentiment_csv(tmp_path / "task.csv", 80)
    probe = tmp_path / "probe"
    assert cli.main(["probe", str(folder), "--data", str(task), "--out", str(probe), "--n-train", "40",
                     "--n", "16", "--steps", "50"]) == 0
    rows = list(csv.DictReader(open(probe / "probes.csv")))
    assert [r["site"] for r in rows] == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
                                         "concat", "head.hook_cls"]
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert (probe / "probe_accuracy.png").stat().st_size > 1000

    silence = tmp_path / "silence"
    argv = ["silence", str(folder), "--data", str(task), "--probe", str(probe), "--out", str(silence),
            "--n", "12", "--k", "10,50,100", "--random", "3", "--asymmetry-k", "50", "--quiet"]
    assert cli.main(argv) == 0
    table = list(csv.DictReader(open(silence / "silencing.csv")))
    # per site: 3 k x (top + attribution (the default positive control) + bottom + 2 classes + 3 random)
    assert len(table) == 3 * 3 * (1 + 1 + 1 + 2 + 3)
    assert {r["selection"] for r in table} == {"top", "attribution", "bottom", "class", "random"}
    assert all(float(r["mean_kl"]) >= 0 and r["mean_margin"] != "" for r in table)
    # k = 100%: every selection silences all neurons, so top, bottom and random agree
    for site in {r["site"] for r in table}:
        full = {r["accuracy"] for r in table if r["site"] == site and r["k_percent"] == "100"}
        assert len(full) == 1
    controls = list(csv.DictReader(open(silence / "controls.csv")))
    assert all(0 < float(c["p"]) <= 1 for c in controls)
    assert {c["score"] for c in controls} == {"accuracy", "weighted_f1", "margin", "kl"}
    summary = json.loads((silence / "summary.json").read_text())
    assert set(summary["results"]["layers"][0]["ranked"]) == {"top/zero", "attribution/zero", "bottom/zero"}
    assert "margin" in summary["results"]["clean"]
    assert len(summary["results"]["asymmetry"]["blocks.1.hook_resid_post"]) == 2
    for png in ("silencing_curves", "class_asymmetry"):
        assert (silence / f"{png}.png").stat().st_size > 1000
    first = (silence / "summary.json").read_bytes(), (silence / "silencing.csv").read_bytes()
    assert cli.main(argv) == 0  # rerun: identical files
    assert ((silence / "summary.json").read_bytes(), (silence / "silencing.csv").read_bytes()) == first

    attack = tmp_path / "attack"
    assert cli.main(["attack", str(folder), "--data", str(task), "--probe", str(probe), "--out", str(attack),
                     "--n", "12", "--target", "1"]) == 0
    arows = list(csv.DictReader(open(attack / "attacks.csv")))
    zero = [r for r in arows if float(r["magnitude"]) == 0]
    assert len({r["accuracy"] for r in zero}) == 1  # every attack at 0 leaves the model as it is
    assert "flip" in capsys.readouterr().out
    assert cli.main(["silence", str(folder), "--data", str(task), "--probe", str(tmp_path / "none"),
                     "--out", str(tmp_path / "x")]) == 2


def test_apex_in_bfloat16_records_the_dtype(tmp_path):
    """--dtype bfloat16 loads the model in bf16 (its clean predictions are those of a bf16
    forward), and the dtype is part of the run's settings: the same folder in float32 is another
    run and is refused without --overwrite."""
    import apex_jax

    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"))
    task = sentiment_csv(tmp_path / "task.csv", 40)
    out = tmp_path / "bf16"
    argv = ["apex", str(folder), "--data", str(task), "--out", str(out), "--n", "4", "--draws", "4",
            "--sigmas", "0,1", "--quiet"]
    assert cli.main([*argv, "--dtype", "bfloat16"]) == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["dtype"] == "bfloat16"
    rows = list(csv.DictReader(open(out / "samples.csv")))
    bf16 = apex_jax.load(folder, dtype="bfloat16")
    from apex_jax import data as data_lib

    ds = data_lib.get_split(str(task), "all", n=4, seed=0)  # a file: used whole
    clean = np.asarray(bf16.forward(bf16.encode(list(ds.inputs), max_length=64)).logits).argmax(-1)
    assert [int(r["clean_prediction"]) for r in rows] == clean.tolist()
    assert all(float(r["kept_sigma_0"]) == 1.0 for r in rows)  # σ = 0 keeps every bf16 prediction
    assert cli.main([*argv, "--dtype", "float32"]) == 2  # another precision is another run
