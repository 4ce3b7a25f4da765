"""Small ViTs trained from scratch for the reproduction experiments.

The patch size gives a 4x4 patch grid (16 patches + [CLS]), as `apex-jax finetune vit-tiny`
does: 7x7 patches on 28x28 MNIST, 2x2 on 8x8 digits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax.data import Dataset
from apex_jax.models.config import from_hf
from apex_jax.models.encoder import Encoder, Hooks
from apex_jax.models.model import Model
from apex_jax.models.presets import vit_hf_config

SIZES = {"tiny": "vit-tiny", "micro": "vit-micro"}  # size -> apex_jax.models.presets name


def hf_config(data: Dataset, size: str = "tiny") -> dict:
    """An HF ViT config dict sized to `data`'s images (4x4 patch grid)."""
    if data.kind != "image":
        raise ValueError(f"{data.name} is not an image data set.")
    if size not in SIZES:
        raise ValueError(f"unknown ViT size {size!r}; choose from {list(SIZES)}.")
    _, c, h, w = data.inputs.shape
    if h != w or h % 4:
        raise ValueError(f"images must be square with a side divisible by 4; got {h}x{w}.")
    return vit_hf_config(SIZES[size], c, h)


_TEMPLATES: dict = {}


def template(data: Dataset, size: str = "tiny") -> Model:
    """A fresh ViT for `data` (seed 0), one shared object per architecture: compiled sweep and
    training kernels are cached per Model object, so every model of that architecture runs
    through the same ones (pass its params)."""
    hf = hf_config(data, size)
    key = (json.dumps(hf, sort_keys=True), data.label_names)
    if key not in _TEMPLATES:
        # what apex_jax.create builds, with the init compiled once (jit) instead of run eagerly
        cfg = dataclasses.replace(from_hf(hf), n_classes=data.n_classes, has_pooler=False)
        params = jax.device_get(_init(np.uint32(0), cfg=cfg))
        _TEMPLATES[key] = Model(cfg, params, hf, label_names=data.label_names, source="<new>")
    return _TEMPLATES[key]


def fresh_params(model: Model, seeds: Sequence[int]) -> Any:
    """Freshly initialized parameters, one set per seed, stacked on a leading axis (the Linen
    init of `apex_jax.create(..., seed=s)`, compiled once per architecture)."""
    trees = [jax.device_get(_init(np.uint32(s), cfg=model.config)) for s in seeds]
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _init(seed: jax.Array, *, cfg) -> dict:
    """Linen init of a ViT of architecture `cfg` from a uint32 seed (compiled once per cfg)."""
    s = cfg.image_size
    dummy = {"pixel_values": jnp.zeros((1, cfg.num_channels, s, s), jnp.float32)}
    return dict(Encoder(cfg).init(jax.random.key(seed), dummy, Hooks({}, frozenset(), {}))["params"])


def pixels(model: Model, images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] ([n, c, h, w] or [m, n, c, h, w]) -> normalized pixel_values."""
    images = np.asarray(images, np.float32)
    flat = images.reshape((-1,) + images.shape[-3:])
    return model.encode(flat)["pixel_values"].reshape(images.shape)
