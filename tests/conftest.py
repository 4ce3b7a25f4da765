"""Shared fixtures: tiny random Hugging Face reference models, built once per session.

`ref(arch, **config)` returns a `Ref` (HF folder, the PyTorch model, the apex-jax model loaded
from that folder, a padded input batch) and caches it for the whole session, so every test
file reuses the same folders and the same jitted functions. Building the first one imports
torch and transformers (a few seconds); later ones take ~50 ms.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import BERT_KW
from tests.helpers.hf_reference import make_inputs, make_model, torch_forward

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


@pytest.fixture(scope="session")
def bert(ref) -> Ref:
    return ref("bert", **BERT_KW)

# The CLI enables JAX's persistent compilation cache under $APEX_JAX_CACHE (default
# ~/.cache/apex-jax); tests never write one into the user's home. Assets are still found.
import os as _os

_os.environ.setdefault("APEX_JAX_NO_COMPILE_CACHE", "1")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
    """After each test file, drop JAX's compiled executables once the process holds 40% of its
    memory-map limit: every executable stays mapped, and one process compiling for the whole
    suite crashed XLA at the limit (see apex_jax/engine/memory_maps.py). Well below the 80% at
    which `run_sweep` itself clears them, so no test sees that warning."""
    yield
    from apex_jax.engine.memory_maps import memory_maps

    counts = memory_maps()
    if counts is not None and counts[0] > 0.4 * counts[1]:
        import jax

        jax.clear_caches()
