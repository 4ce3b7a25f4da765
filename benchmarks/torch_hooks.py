"""PyTorch forward-hook baseline for APEX noise sweeps (the way the reference code works).

A Hugging Face `AutoModelForSequenceClassification` with one `register_forward_hook` per
`bert.encoder.layer[i]` that adds Gaussian noise `sigma_site * randn_like(output)` to the layer's
output (= the next residual stream, i.e. apex-jax's `blocks.{i}.hook_resid_post`).

Two forms:
* reference: one sentence x one draw per forward (batch 1), `torch.inference_mode()`;
* best: many draws (and several σ) of one sentence batched at the sentence's exact length (no
  padding), `inference_mode`, `torch.set_num_threads(all cores)`.

σ per row: `NoiseHooks.sigma` is a tensor [batch, 1, 1] of relative σ; a layer's noise std is
σ_row x RMS(site) (the same per-site RMS that `apex_jax.calibrate_rms` measures).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
import torch


def load_hf(folder: str, threads: int | None = None):
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    return model


def encoder_layers(model) -> Sequence[torch.nn.Module]:
    """The transformer blocks of an HF classifier, in order: `encoder.layer` (BERT family),
    `h` (GPT-2) or `layers` (Llama family); a hook on block i's output sees `blocks.{i}.hook_resid_post`."""
    base = getattr(model, model.base_model_prefix)
    if hasattr(base, "encoder"):
        return list(base.encoder.layer)
    if hasattr(base, "h"):
        return list(base.h)
    return list(base.layers)


class NoiseHooks:
    """Forward hooks adding σ_row · rms[i] · N(0, 1) to every layer output."""

    def __init__(self, model, rms: Sequence[float]):
        layers = encoder_layers(model)
        if len(layers) != len(rms):
            raise ValueError(f"{len(rms)} RMS values for {len(layers)} layers.")
        self.rms = [float(r) for r in rms]
        self.sigma: torch.Tensor | None = None  # [batch, 1, 1] relative σ, or None = clean
        self.output_types: set[str] = set()
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, inputs, output):
            self.output_types.add(type(output).__name__)
            if self.sigma is None:
                return None
            if isinstance(output, tuple):  # older transformers: (hidden_states, ...)
                h = output[0]
                return (h + (self.sigma * self.rms[i]) * torch.randn_like(h),) + tuple(output[1:])
            return output + (self.sigma * self.rms[i]) * torch.randn_like(output)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def sentence_tensors(batch: dict, row: int) -> dict[str, torch.Tensor]:
    """One sentence of an apex-jax encoded batch, cropped to its real length: [1, L] tensors."""
    L = int(np.asarray(batch["attention_mask"][row]).sum())
    return {k: torch.from_numpy(np.ascontiguousarray(np.asarray(v[row : row + 1, :L], np.int64)))
            for k, v in batch.items()}


@torch.inference_mode()
def clean_predictions(model, batch: dict, rows: Sequence[int]) -> np.ndarray:
    out = []
    for r in rows:
        out.append(int(model(**sentence_tensors(batch, r)).logits.argmax(-1)))
    return np.asarray(out)


@torch.inference_mode()
def run_reference(model, hooks: NoiseHooks, batch: dict, jobs: Sequence[tuple[int, float]]) -> tuple[float, list[int]]:
    """Reference form: one forward per (row, σ) job, batch 1. Returns (seconds, predictions)."""
    inputs = {}
    preds = []
    t0 = time.perf_counter()
    for row, sigma in jobs:
        if row not in inputs:
            inputs[row] = sentence_tensors(batch, row)
        hooks.sigma = torch.full((1, 1, 1), float(sigma))
        preds.append(int(model(**inputs[row]).logits.argmax(-1)))
    hooks.sigma = None
    return time.perf_counter() - t0, preds


@torch.inference_mode()
def run_best(model, hooks: NoiseHooks, batch: dict, rows: Sequence[int], sigmas: Sequence[float],
             draws: int, batch_size: int, n_classes: int) -> tuple[float, np.ndarray]:
    """Best form: for each sentence, the (σ, draw) pairs in batches of `batch_size` rows at the
    sentence's exact length. Returns (seconds, counts [len(rows), len(sigmas), n_classes])."""
    sig = np.repeat(np.asarray(sigmas, np.float32), draws)  # row order: σ-major, then draw
    counts = np.zeros((len(rows), len(sigmas), n_classes), np.int64)
    t0 = time.perf_counter()
    for j, r in enumerate(rows):
        x = sentence_tensors(batch, r)
        for s in range(0, len(sig), batch_size):
            part = sig[s : s + batch_size]
            b = len(part)
            hooks.sigma = torch.from_numpy(part).view(b, 1, 1)
            pred = model(**{k: v.expand(b, -1) for k, v in x.items()}).logits.argmax(-1).numpy()
            g = (s + np.arange(b)) // draws
            np.add.at(counts[j], (g, pred), 1)
    hooks.sigma = None
    return time.perf_counter() - t0, counts


def torch_matmul_gflops(n: int, reps: int) -> list[float]:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return out
