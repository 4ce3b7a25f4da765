"""PyTorch forward-hook baselines for SYNAPSE silencing (workload W2).

A Hugging Face `AutoModelForSequenceClassification`; silencing a mask at
`blocks.{i}.hook_resid_post` = a forward hook on `bert.encoder.layer[i]` that zeroes the selected
neurons of the layer's output at the [CLS] position only (output[:, 0, mask] = 0), in place (the
output is a fresh tensor that only the next layer reads).

Two forms:
* reference: one (sentence, mask, layer) per forward, batch 1, a hook registered for that
  forward (zeroing output[:, 0, idx] for the mask's neuron indices), `torch.inference_mode()`;
* best: for one sentence and one layer, the masks stacked as a batch (`batch_size` rows at the
  sentence's exact length, no padding), one hook for the whole sentence x layer that multiplies
  output[:, 0, :] by the rows' keep vectors (1 - mask), `inference_mode`, all cores.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from torch_hooks import encoder_layers, sentence_tensors


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output  # older transformers: tuple


@torch.inference_mode()
def run_reference(model, batch: dict, masks: Sequence[np.ndarray], jobs: Sequence[tuple[int, int, int]]):
    """jobs: (row, layer, grid index); masks[layer] is [G, d]. One forward per job.
    Returns (seconds, predictions [len(jobs)])."""
    layers = encoder_layers(model)
    idx = {}  # neuron indices per (layer, g), built before timing
    for _, i, g in jobs:
        if (i, g) not in idx:
            idx[(i, g)] = torch.from_numpy(np.flatnonzero(masks[i][g]).astype(np.int64))
    inputs = {r: sentence_tensors(batch, r) for r in sorted({j[0] for j in jobs})}
    preds = np.empty(len(jobs), np.int64)
    t0 = time.perf_counter()
    for n, (r, i, g) in enumerate(jobs):
        neurons = idx[(i, g)]

        def hook(module, inp, output, neurons=neurons):
            _hidden(output)[:, 0, neurons] = 0.0

        h = layers[i].register_forward_hook(hook)
        try:
            preds[n] = int(model(**inputs[r]).logits.argmax(-1))
        finally:
            h.remove()
    return time.perf_counter() - t0, preds


class _KeepHook:
    def __init__(self, position: int = 0):
        self.keep: torch.Tensor | None = None  # [B, d]: 1 keeps a neuron, 0 silences it
        self.position = position  # the classifier token: 0 ([CLS]) or -1 (a decoder's last token)

    def __call__(self, module, inp, output):
        _hidden(output)[:, self.position, :] *= self.keep


@torch.inference_mode()
def run_best(model, batch: dict, rows: Sequence[int], masks: Sequence[np.ndarray], batch_size: int,
             layers_to_run: Sequence[int] | None = None, position: int = 0):
    """For every row and layer, all G masks of that layer batched `batch_size` at a time.
    `position` is the classifier token in the exact-length input: 0 for [CLS], -1 for a
    decoder's last token. Returns (seconds, predictions [len(rows), n_layers, G], top-2 logit
    margins, same shape)."""
    layers = encoder_layers(model)
    L_ids = list(range(len(masks))) if layers_to_run is None else list(layers_to_run)
    G = masks[0].shape[0]
    keep = [torch.from_numpy(np.ascontiguousarray(1.0 - np.asarray(m, np.float32))) for m in masks]
    preds = np.zeros((len(rows), len(masks), G), np.int64)
    margin = np.zeros((len(rows), len(masks), G), np.float32)
    hook = _KeepHook(position)
    t0 = time.perf_counter()
    for j, r in enumerate(rows):
        x = sentence_tensors(batch, r)
        for i in L_ids:
            h = layers[i].register_forward_hook(hook)
            try:
                for s in range(0, G, batch_size):
                    hook.keep = keep[i][s : s + batch_size]
                    b = hook.keep.shape[0]
                    logits = model(**{k: v.expand(b, -1) for k, v in x.items()}).logits
                    top2 = logits.topk(2, dim=-1).values
                    preds[j, i, s : s + b] = logits.argmax(-1).numpy()
                    margin[j, i, s : s + b] = (top2[:, 0] - top2[:, 1]).numpy()
            finally:
                h.remove()
    hook.keep = None
    return time.perf_counter() - t0, preds, margin


@torch.inference_mode()
def clean_logits(model, batch: dict, rows: Sequence[int]) -> np.ndarray:
    return np.stack([model(**sentence_tensors(batch, r)).logits[0].numpy() for r in rows])
