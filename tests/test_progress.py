"""apex_jax.progress: the line format off a terminal, silence when quiet, rate and ETA on a fake
clock, and the long steps that report through it (features, probes, fine-tuning, CLI)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from apex_jax import progress as P


class Clock:
    """A settable clock: `tracker(..., clock=clock)` reads `clock.t`."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_duration_format():
    assert [P.duration(s) for s in (0, 7.4, 59.6, 65, 3599, 3720, -3)] == \
        ["0s", "7s", "1m00s", "1m05s", "59m59s", "1h02m", "0s"]


def test_eta_leaves_out_the_time_before_the_first_update():
    clock, out = Clock(), io.StringIO()
    bar = P.tracker(100, "fine-tuning", "steps", True, stream=out, clock=clock)
    clock.t += 30.0  # compilation: 30 s before the first step is done
    bar.update()
    s = bar.status()
    assert s.rate is None and s.eta is None  # one update: the time per step is not known yet
    assert s.line() == "fine-tuning: 1/100 steps (1%)"
    for _ in range(20):  # then 4 steps per second
        clock.t += 0.25
        bar.update()
    s = bar.status()
    assert s.done == 21 and s.elapsed == pytest.approx(35.0)
    assert s.rate == pytest.approx(4.0)
    assert s.eta == pytest.approx(79 / 4.0)
    assert s.line() == "fine-tuning: 21/100 steps (21%), 4 steps/s, ETA 20s"
    bar.close()
    assert out.getvalue().splitlines()[-1] == "fine-tuning: 21/100 steps (21%) in 35s, 0.6 steps/s"


def test_non_tty_lines_every_tenth_and_a_summary():
    clock, out = Clock(), io.StringIO()  # StringIO.isatty() is False: line mode
    with P.tracker(50, "[CLS] features", "inputs", True, stream=out, clock=clock) as bar:
        for _ in range(10):
            clock.t += 10.0
            bar.update(5)
    lines = out.getvalue().splitlines()
    # 10%, 20%, ... 90% (the 100% report is the summary), then the summary
    assert len(lines) == 10
    assert lines[0] == "[CLS] features: 5/50 inputs (10%)"  # the first update: no rate yet
    assert lines[1] == "[CLS] features: 10/50 inputs (20%), 0.5 inputs/s, ETA 1m20s"
    assert lines[8] == "[CLS] features: 45/50 inputs (90%), 0.5 inputs/s, ETA 10s"
    assert lines[-1] == "[CLS] features: 50/50 inputs (100%) in 1m40s, 0.5 inputs/s"  # overall: 50 / 100 s


def test_a_fast_step_logs_only_its_summary():
    clock, out = Clock(), io.StringIO()
    with P.tracker(4, "probes", "steps", True, stream=out, clock=clock) as bar:
        for _ in range(4):
            clock.t += 1.0  # 4 s in all: under LINE_AFTER
            bar.update()
    assert out.getvalue().splitlines() == ["probes: 4/4 steps (100%) in 4s, 1 steps/s"]


def test_non_tty_lines_at_most_one_per_tenth_but_every_30_s():
    clock, out = Clock(), io.StringIO()
    bar = P.tracker(1000, "sweep", "forwards", True, stream=out, clock=clock)
    clock.t += 6.0  # past LINE_AFTER
    for _ in range(99):  # 99 small updates within the first 10%: no line
        bar.update(1)
    assert out.getvalue() == ""
    bar.update(1)  # 10%
    clock.t += 31.0  # slow: 31 s later, 1 more forward (< 20%) still gets a line
    bar.update(1)
    clock.t += 5.0
    bar.update(1)  # neither 20% nor 30 s
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].split(" (")[0] for ln in lines] == [" 100/1000 forwards", " 101/1000 forwards"]


def test_quiet_and_auto_print_nothing_off_a_terminal(capsys):
    out = io.StringIO()
    for mode in (False, None):
        with P.tracker(10, "x", progress=mode, stream=out) as bar:
            bar.update(10)
    assert out.getvalue() == ""
    with P.tracker(10, "x", progress=False) as bar:  # default stream: stderr
        bar.update(10)
    assert capsys.readouterr() == ("", "")


def test_callable_gets_every_update_and_a_final_status():
    got = []
    clock = Clock()
    with P.tracker(4, "probes", "steps", got.append, clock=clock) as bar:
        for _ in range(2):
            clock.t += 2.0
            bar.update(2)
    assert [(s.done, s.finished) for s in got] == [(2, False), (4, False), (4, True)]
    assert got[-1].elapsed == pytest.approx(4.0) and got[-1].rate == pytest.approx(1.0)


def test_bad_progress_argument():
    with pytest.raises(ValueError, match="progress must be"):
        P.tracker(3, "x", progress="yes")


# ------------------------------------------------------------------ the long steps report
def test_feature_extraction_and_probe_training_report(tmp_path):
    import apex_jax
    from apex_jax.synapse.features import extract_cls
    from apex_jax.synapse.probes import CHUNK_STEPS, ProbeConfig, train_probes
    from tests.helpers.tiny_text import tiny_bert_folder
    from apex_jax.models.loading import resolve

    model = apex_jax.load(str(tiny_bert_folder(tmp_path / "bert", resolve("minilm"))), num_labels=2)
    texts = [f"sentence number {i} is {'good' if i % 2 else 'bad'}" for i in range(10)]
    feats_seen = []
    feats = extract_cls(model, model.params, model.encode(texts), batch_size=4, progress=feats_seen.append)
    assert [s.done for s in feats_seen] == [4, 8, 10, 10] and feats_seen[-1].finished
    labels = np.arange(10) % 2
    steps = []
    cfg = ProbeConfig(steps=CHUNK_STEPS + 7)  # one full chunk and a remainder
    train_probes(feats, labels, np.arange(8), np.arange(8, 10), cfg, progress=steps.append)
    # one width group (d_model; CONCAT is another width): 2 groups x (50 + 7) steps
    assert steps[-1].total == 2 * cfg.steps and steps[-1].done == 2 * cfg.steps
    assert [s.done for s in steps[:2]] == [CHUNK_STEPS, CHUNK_STEPS + 7]


def test_probe_chunks_match_one_run():
    """Chunking the optimizer steps (for progress) does not change the probes: the step count
    lives in the optimizer state."""
    from apex_jax.synapse import probes as pr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 40, 6)).astype(np.float32)
    y = (x[0, :, 0] > 0).astype(np.int32)
    cfg = pr.ProbeConfig(steps=30)
    W1, b1, l1 = pr.fit_stack(x, y, cfg, 2)
    old = pr.CHUNK_STEPS
    try:
        pr.CHUNK_STEPS = 7
        W2, b2, l2 = pr.fit_stack(x, y, cfg, 2)
    finally:
        pr.CHUNK_STEPS = old
    np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    assert l1[0] < np.log(2) - 0.2  # it learned the separable first feature set


def test_cli_finetune_reports_steps_off_a_terminal_and_quiet_silences(tmp_path, capsys):
    from apex_jax import cli
    from apex_jax.models.loading import resolve
    from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "bert", resolve("minilm"))
    task = sentiment_csv(tmp_path / "task.csv", 60)
    argv = ["finetune", str(folder), "--data", str(task), "--epochs", "1", "--batch-size", "8"]
    assert cli.main(argv + ["--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    n_steps = -(-json.loads((tmp_path / "a" / "summary.json").read_text())["results"]["n_train"] // 8)
    steps = [ln for ln in err.splitlines() if ln.startswith("fine-tuning, epoch 1/1: ")]
    assert steps and steps[-1].startswith(f"fine-tuning, epoch 1/1: {n_steps}/{n_steps} steps (100%) in ")
    assert any(ln.startswith("test: ") and "inputs" in ln for ln in err.splitlines())
    assert cli.main(argv + ["--out", str(tmp_path / "b"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "fine-tuning" not in err and "ETA" not in err and "inputs/s" not in err
