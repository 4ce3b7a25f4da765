"""Results as tables: every result's `to_pandas()` equals the CSV its run layer writes (same
columns, same order, values to the CSV's 6 significant digits), and the numbers are the
result's own; plus the README's notebook session, run as written on a tiny model."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import apex_jax  # noqa: E402
from apex_jax import data as data_lib  # noqa: E402
from apex_jax.errors import InputError  # noqa: E402
from apex_jax.synapse.run import load_probes  # noqa: E402
from apex_jax.models.loading import resolve  # noqa: E402
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def same(frame, csv_path: Path) -> None:
    """`frame` equals the CSV (read back by pandas: NaN for empty cells, inf for "inf"); CSV
    cells hold 6 significant digits, so a value may differ from the frame's by half a unit in
    the 6th digit (relative 5e-6)."""
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), pd.read_csv(csv_path), check_dtype=False,
                                  rtol=5e-6, atol=1e-12)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    folder = tiny_bert_folder(root / "bert", resolve("minilm"), seed=4)
    task = sentiment_csv(root / "task.csv", 40)
    model = apex_jax.load(str(folder))
    test = data_lib.get_split(str(task), "test", n=6)
    train = data_lib.get_split(str(task), "train", n=24)
    apex = apex_jax.apex_run(model, test, root / "apex", sigmas=[0.05, 1.0, 8.0], draws=4, max_length=16)
    apex_jax.probe_run(model, (train, test), root / "probe", layers=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                       steps=10, max_length=16)
    silence = apex_jax.silence_run(model, test, root / "probe", root / "silence", k=(10.0, 50.0), random=2, controls="none",
                                   asymmetry_k=50.0, max_length=16)
    attack = apex_jax.attack_run(model, test, root / "probe", root / "attack", target=1, max_length=16)
    return {"root": root, "folder": folder, "task": task, "test": test, "apex": apex["result"],
            "silence": silence["result"], "attack": attack["result"]}


def test_apex_frames_equal_the_csvs(env):
    r, test = env["apex"], env["test"]
    per_input = r.to_pandas(labels=test.labels, texts=list(test.inputs))
    same(per_input, env["root"] / "apex" / "samples.csv")
    assert list(per_input["id"]) == list(test.ids) and list(per_input["label"]) == list(test.labels)
    np.testing.assert_array_equal(per_input["clean_prediction"], r.clean)
    np.testing.assert_allclose(per_input[[f"kept_sigma_{s:g}" for s in r.sigmas]], r.consistency)
    assert "label" not in r.to_pandas().columns  # no labels given: no label column
    grid = r.to_pandas("grid")
    same(grid, env["root"] / "apex" / "sigmas.csv")
    np.testing.assert_allclose(grid["sigma"], r.sigmas)
    np.testing.assert_allclose(grid["share_kept"], r.consistency.mean(0))
    np.testing.assert_allclose(grid["share_kept"] + grid["flip_rate"], 1.0)
    esc = r.escape_sigma()
    np.testing.assert_allclose(grid["share_escaped"], [(esc <= s).mean() for s in r.sigmas])
    assert grid["share_escaped"].is_monotonic_increasing
    assert grid["dominant_class"].iloc[-1] == r.bias(-1)["dominant_class"]
    # the per-input frame's escape σ is consistent with the per-σ frame
    assert (per_input["escape_sigma"] <= r.sigmas[-1]).mean() == pytest.approx(grid["share_escaped"].iloc[-1])


def test_synapse_frames_equal_the_csvs(env):
    root = env["root"]
    layers, head = load_probes(root / "probe")
    probes = pd.concat([layers.to_pandas(), head.to_pandas()])
    same(probes, root / "probe" / "probes.csv")
    assert list(probes["site"]) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "concat", "head.hook_cls"]
    assert probes["test_accuracy"].iloc[0] == pytest.approx(layers["blocks.0.hook_resid_post"].metrics.accuracy)
    s = env["silence"]
    for level, name in [("grid", "silencing"), ("controls", "controls"), ("curves", "curves"), ("asymmetry", "asymmetry")]:
        same(s.to_pandas(level), root / "silence" / f"{name}.csv")
    grid = s.to_pandas()  # "grid" by default: 2 sites x 2 k x (top + bottom + 2 classes + 2 random)
    assert len(grid) == 2 * 2 * (1 + 1 + 2 + 2)
    assert set(grid["selection"]) == {"top", "bottom", "class", "random"}
    a = env["attack"]
    frame = a.to_pandas()
    same(frame, root / "attack" / "attacks.csv")
    assert frame.loc[frame["attack"] == "logit_bias", "magnitude"].tolist() == list(apex_jax.AttackConfig().biases)
    assert a["target"] == 1 and isinstance(a, dict)  # still the dict it always was


def test_bad_level_and_missing_pandas(env, monkeypatch):
    with pytest.raises(InputError, match="'input', 'grid'"):
        env["apex"].to_pandas("inputs")
    with pytest.raises(InputError, match="'grid', 'controls', 'curves', 'asymmetry'"):
        env["silence"].to_pandas("input")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match=r"pip install \"apex-jax\[pandas\]\""):
        env["apex"].to_pandas()


def readme_session() -> str:
    """The README's notebook session: the python block under "### In a notebook"."""
    text = README.read_text()
    m = re.search(r"### In a notebook.*?```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its notebook session"
    return m.group(1)


def test_readme_notebook_session_runs(env, tmp_path, monkeypatch):
    """The README's session as written, on the tiny model and task instead of the demo's."""
    code = readme_session()
    for real, tiny in [('"runs/demo/finetune/model"', repr(str(env["folder"]))),
                       ('"vader-movies"', repr(str(env["task"]))), ("n=16", "n=6"), ("draws=16", "draws=4")]:
        assert real in code, real
        code = code.replace(real, tiny)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 — our own README
    assert (tmp_path / "runs" / "notebook" / "index.html").is_file()
    assert (tmp_path / "runs" / "notebook" / "share_kept.png").stat().st_size > 1000
    per_sigma = ns["per_sigma"]
    same(per_sigma, tmp_path / "runs" / "notebook" / "sigmas.csv")
    assert len(ns["per_input"]) == 6
