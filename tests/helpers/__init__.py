"""Shared test helpers: reference sentences and configs, error measures, asset lookup.

Fixtures live in tests/conftest.py; plain functions and constants live here so test modules can
import them (`from tests.helpers import max_err`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# Real sentences of varying length for the MiniLM parity test (padded batch).
SENTENCES = (
    "A fine film.",
    "The plot was thin, but the acting carried it from start to finish.",
    "I would not watch this again.",
    "Despite a slow first hour, the final act is one of the most moving things I have seen "
    "in a cinema in years, and the score is superb.",
    "Meh.",
    "Brilliant, funny and far too short.",
)


# The model most intervention tests use: BERT, 2 layers, 3 heads of odd size 5, d_mlp 23.
BERT_KW = dict(n_heads=3, d_head=5)


def max_err(ours, theirs, mask=None) -> float:
    """max |ours - theirs|, over positions where `mask` ([batch, pos]) is 1 if given."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = np.abs(ours - theirs)
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        diff = diff[mask]  # boolean index over the leading [batch, pos] axes
    return float(diff.max())


def minilm_folder() -> Path:
    """The MiniLM asset folder: apex_jax's resolver, a known cache, else a fetch; skip if none."""
    from apex_jax.models.loading import resolve

    try:
        return resolve("minilm")
    except Exception as first:  # asset missing (or the assets module not ready)
        reason = first
    for root in (os.environ.get("APEX_JAX_CACHE"), "/tmp/apexcache"):
        if root and (Path(root) / "minilm" / "config.json").is_file():
            return Path(root) / "minilm"
    try:
        from apex_jax import assets

        return Path(assets.fetch_assets(["minilm"])["minilm"])
    except Exception as e:
        pytest.skip(f"MiniLM asset unavailable (not cached, fetch failed: {e}; first: {reason})")


def smollm2_folder() -> Path:
    """$APEX_JAX_SMOLLM2, else the `smollm2` asset; skips when neither exists."""
    from apex_jax import assets

    env = os.environ.get("APEX_JAX_SMOLLM2")
    if env:
        if not (Path(env) / "config.json").is_file():
            pytest.fail(f"APEX_JAX_SMOLLM2={env} has no config.json")
        return Path(env)
    try:
        return assets.asset_path("smollm2")
    except assets.AssetMissingError as e:
        pytest.skip(str(e))


def kill_once_checkpointed(procs, run_dir: Path, min_step: int, timeout: float = 240) -> None:
    """SIGKILLs the sweep processes `procs` once `run_dir` holds a checkpoint step >= `min_step`
    (asserting they were all still running: a kill after the end would test nothing)."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        steps = [p for p in Path(run_dir).glob("sweep-checkpoints/*/*") if p.name.isdigit()]
        if steps and max(int(p.name) for p in steps) >= min_step:
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "a process ended before the kill: " + b"".join(
        p.stderr.read() for p in procs if p.poll() is not None).decode()[-2000:]
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()


def write_hf_folder(tmp_path: Path, name: str, cfg: dict, state: dict) -> Path:
    """An HF folder `tmp_path/name` of config.json `cfg` and model.safetensors `state` (numpy
    arrays): a checkpoint edited by hand, for the strict-loading tests."""
    from safetensors.numpy import save_file

    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    save_file(state, str(d / "model.safetensors"))
    return d
