"""SYNAPSE step 1a: the [CLS] vector of every requested site for every input.

"[CLS]" is the classifier token (`apex_jax.engine.positions`): position 0 for encoders, the last
real token for decoders (left or right padding). `extract_cls` runs the model once per chunk of
inputs and keeps only the classifier token of every requested site, so memory holds [chunk, d] per site, never [n, pos, d]. Chunks have a fixed batch
size (the last one is filled with repeated rows that are dropped) and text is cropped to the
chunk's `batching.padded_width`, so the forward compiles a handful of times at most. With
`out=folder` each site's features are streamed into `folder/{site}.npy` (memory-mapped) as
chunks arrive.

    feats = extract_cls(model, model.params, model.encode(texts))   # {site: [n, d_model]}
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apex_jax import sites as site_lib
from apex_jax.batching import Chunk, iter_chunks, num_rows
from apex_jax.engine.positions import token_vector
from apex_jax.models.model import skeleton
from apex_jax.progress import Progress, tracker

Array = Any


def default_sites(model) -> tuple[str, ...]:
    """SYNAPSE's sites: `hook_embed` and every block's `hook_resid_post` (the `all` preset)."""
    return tuple(site_lib.preset_sites("all", model.config.n_layers))


def check_cls_sites(model, sites: Sequence[str]) -> tuple[str, ...]:
    """Validates site names for [CLS] reading (known, no attention patterns, no repeats)."""
    sites = tuple(sites)
    if not sites:
        raise ValueError(f"no sites given; valid sites: {site_lib.describe(model.sites)}.")
    unknown = [s for s in sites if s not in model.sites]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; valid sites: {site_lib.describe(model.sites)}.")
    patterns = [s for s in sites if site_lib.parse(s)[1] == "attn.hook_pattern"]
    if patterns:
        raise ValueError(
            f"{patterns}: attention patterns have no [CLS] feature vector of fixed width; use a "
            "residual, MLP, attention-output or head site."
        )
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites are repeated: {list(sites)}.")
    return sites


@functools.partial(jax.jit, static_argnames=("config", "sites"))
def _read_cls(params: Any, batch: dict, *, config, sites: tuple[str, ...]) -> dict:
    """{site: float32 [batch, d]} of one chunk. Static: the architecture (`ArchConfig`) and the
    site tuple; every checkpoint of an architecture shares the compiled function."""
    model = skeleton(config)  # parameter-free: apply takes params
    head_only = config.n_classes is not None  # last block: [CLS] only
    out = model.apply(params, batch, capture=sites, head_only=head_only)
    mask = batch.get("attention_mask")
    return {s: token_vector(config, s, out.captured[s], mask, head_only=head_only).astype(jnp.float32)
            for s in sites}


def extract_cls(
    model,
    params: Any,
    inputs: Mapping[str, np.ndarray],
    sites: Sequence[str] | None = None,
    batch_size: int = 64,
    out: str | Path | None = None,
    progress: Progress = None,
) -> dict[str, np.ndarray]:
    """The classifier-token vector at each site for every input: [CLS] (position 0) for
    encoders, the last real token for decoders.

    Args:
        model: an `apex_jax.Model`.
        params: its parameters (e.g. `model.params`).
        inputs: `model.encode(...)` output: text {input_ids, attention_mask[, token_type_ids]}
            [n, pos], or {"pixel_values": [n, channels, height, width]}.
        sites: site names (`model.sites`); default `default_sites(model)` = hook_embed and every
            `blocks.{i}.hook_resid_post`. Head sites ([batch, d]) are taken as they are; sites
            with head axes ([batch, pos, n_heads, d_head]) are flattened to n_heads · d_head.
        batch_size: examples per forward pass.
        out: optional folder; each site's features are written to `out/{site}.npy` as chunks
            arrive and memory-mapped arrays (read-only) are returned.
        progress: inputs read, with rate and ETA (`apex_jax.progress`: None = a bar on a
            terminal only, True = bar or log lines, False = silent, or a callable).

    Returns:
        {site: float32 [n, d]} in the order of `sites`.
    """
    sites = check_cls_sites(model, default_sites(model) if sites is None else sites)
    n = num_rows(inputs)
    folder = None
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, np.ndarray] = {}

    bar = tracker(n, "[CLS] features", "inputs", progress)

    def store(chunk: Chunk, got: dict) -> None:
        k = chunk.stop - chunk.start
        got = jax.device_get(got)  # one transfer per chunk; blocks until the chunk is done
        for s in sites:
            rows = got[s][:k]
            if s not in result:
                shape = (n, rows.shape[1])
                result[s] = (
                    np.lib.format.open_memmap(folder / f"{s}.npy", mode="w+", dtype=np.float32, shape=shape)
                    if folder is not None else np.empty(shape, np.float32)
                )
            result[s][chunk.start:chunk.stop] = rows
        bar.update(k)

    # Dispatch chunk i+1 before copying chunk i to the host, so transfer overlaps compute.
    pending = None
    for chunk in iter_chunks(inputs, batch_size):
        got = _read_cls(params, chunk.batch, config=model.config, sites=sites)
        if pending is not None:
            store(*pending)
        pending = (chunk, got)
    store(*pending)
    bar.close()

    if folder is None:
        return result
    for s in sites:
        result[s].flush()
    result.clear()  # drop the writable maps (closing them) before reopening read-only
    return {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in sites}
