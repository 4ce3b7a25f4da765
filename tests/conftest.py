"""Shared fixtures: tiny random Hugging Face reference models, built once per session.

`ref(arch, **config)` returns a `Ref` (HF folder, the PyTorch model, the apex-jax model loaded
from that folder, a padded input batch) and caches it for the whole session, so every test
file reuses the same folders and the same jitted functions. Building the first one imports
torch and transformers (a few seconds); later ones take ~50 ms.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hf_reference import make_inputs, make_model, torch_forward  # noqa: E402

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


@dataclasses.dataclass
class Ref:
    """One tiny HF reference model and everything derived from it."""

    arch: str
    folder: Path
    hf: Any  # the PyTorch model (eval mode, eager attention)
    model: Any  # apex_jax.Model loaded from `folder`
    inputs: dict  # padded batch from hf_reference.make_inputs
    _torch_out: Any = None

    @property
    def torch_out(self):
        """HF forward on `inputs` with hidden_states and attentions (computed once)."""
        if self._torch_out is None:
            self._torch_out = torch_forward(self.hf, self.inputs)
        return self._torch_out

    @property
    def token_mask(self) -> np.ndarray:
        """[batch, pos] 1 at real tokens (all ones for ViT)."""
        if "attention_mask" in self.inputs:
            return np.asarray(self.inputs["attention_mask"])
        b = self.inputs["pixel_values"].shape[0]
        return np.ones((b, self.model.config.n_patches + 1), np.int32)


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    """Factory `ref(arch, **hf_config_kw) -> Ref`, memoized for the session."""
    import apex_jax

    cache: dict = {}

    def get(arch: str, **kw) -> Ref:
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            name = arch + "".join(f"-{k}{v}" for k, v in sorted(kw.items()))
            folder = tmp_path_factory.mktemp(name)
            hf = make_model(arch, folder, **kw)
            cache[key] = Ref(arch, folder, hf, apex_jax.load(folder), make_inputs(arch))
        return cache[key]

    return get


# The model most intervention tests use: BERT, 2 layers, 3 heads of odd size 5, d_mlp 23.
BERT_KW = dict(n_heads=3, d_head=5)


@pytest.fixture(scope="session")
def bert(ref) -> Ref:
    return ref("bert", **BERT_KW)


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
