"""Small ViTs trained from scratch for the reproduction experiments.

The patch size gives a 4x4 patch grid (16 patches + [CLS]), as `apex-jax finetune vit-tiny`
does: 7x7 patches on 28x28 MNIST, 2x2 on 8x8 digits.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

import apex_jax
from apex_jax import Model
from apex_jax.data import Dataset
from apex_jax.models import vit_hf_config

SIZES = {"tiny": "vit-tiny", "micro": "vit-micro"}  # size -> apex_jax.models.VIT_PRESETS name


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


def template(data: Dataset, size: str = "tiny") -> Model:
    """A fresh ViT for `data` (`apex_jax.create`, seed 0): the architecture every model of that
    size runs through (pass each model's params). Compiled functions are keyed by its config
    (jit static arguments), so separate templates of one architecture share them."""
    return apex_jax.create(hf_config(data, size), num_labels=data.n_classes, label_names=data.label_names)


def fresh_params(model: Model, seeds: Sequence[int]) -> Any:
    """Freshly initialized parameters of `model`'s architecture, one set per seed, stacked on a
    leading axis: `apex_jax.create(..., seed=s)`'s. (Its eager Linen init takes ~0.1 s per tiny
    ViT and gives the same bits as a jitted init, so there is nothing to compile or cache.)"""
    trees = [apex_jax.create(model.hf_config, num_labels=model.config.n_classes, seed=s).params for s in seeds]
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def pixels(model: Model, images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] ([n, c, h, w] or [m, n, c, h, w]) -> normalized pixel_values."""
    images = np.asarray(images, np.float32)
    flat = images.reshape((-1,) + images.shape[-3:])
    return model.encode(flat)["pixel_values"].reshape(images.shape)
