"""What every parity test against a Hugging Face PyTorch model shares: a random HF model moved off
its init and saved, a forward on numpy inputs, and the HF model's own activations captured with
forward hooks, reshaped to apex-jax's per-head layouts.

Each family's test keeps only what is its own: the config, the table of HF submodules per site
(`{local site: (submodule path in a layer, "in" | "out")}`) and its special layouts (fused q/k/v
projections, gated MLP halves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


def perturb(model, scale: float = 0.1):
    """`model` with every weight moved off its init by N(0, scale²) noise (so norms' weights,
    biases and every layer matter), in eval mode."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def random_model(build: Callable[[], Any], folder: str | Path | None = None, seed: int = 0, eager: bool = False):
    """`build()` under torch seed `seed`, perturbed (`perturb`) and saved to `folder` if given;
    `eager`: switched to the eager attention (whose patterns the hooks can read)."""
    import torch

    torch.manual_seed(seed)
    model = build()
    if eager:
        model.config._attn_implementation = "eager"
    model = perturb(model)
    if folder is not None:
        model.save_pretrained(str(folder))
    return model


def torch_forward(model, inputs: dict[str, np.ndarray], **kwargs):
    """`model`'s forward on numpy `inputs` without gradients: integer inputs as int64 tensors,
    `pixel_values` as they are; `kwargs` (output_hidden_states=…) go to the model."""
    import torch

    with torch.no_grad():
        t = {k: torch.from_numpy(np.asarray(v)) if k == "pixel_values" else torch.from_numpy(np.asarray(v)).long()
             for k, v in inputs.items()}
        return model(**t, **kwargs)


def full_forward(model, inputs: dict[str, np.ndarray]):
    """`torch_forward` returning every hidden state and attention pattern."""
    return torch_forward(model, inputs, output_hidden_states=True, output_attentions=True)


def block_hooks(layers, table: dict[str, tuple[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """{"blocks.{i}.{local}": (submodule, where)} for every layer `i` and entry of `table`
    (`{local: (path inside the layer, where)}`)."""
    return {f"blocks.{i}.{local}": (layer.get_submodule(path), where)
            for i, layer in enumerate(layers) for local, (path, where) in table.items()}


def capture(hooks: dict[str, tuple[Any, Any]], run: Callable[[], Any], keep_first: bool = False):
    """(run()'s result, {site: numpy activation}) with a forward hook on each `hooks` entry
    (`{site: (module, where)}`; where: "in" (the first input), "out" (the output, the first
    element of a tuple output) or a function of (args, out)). A module that fires twice is an
    error (a shared module would make the site ambiguous) unless `keep_first` (then its first
    call counts)."""
    found: dict[str, np.ndarray] = {}

    def hook(site, where):
        def fn(module, args, out):
            if site in found:
                assert keep_first, f"{site} fired twice (a shared module?)"
                return
            v = args[0] if where == "in" else out if where == "out" else where(args, out)
            found[site] = (v[0] if isinstance(v, tuple) else v).detach().numpy().copy()
        return fn

    handles = [module.register_forward_hook(hook(site, where)) for site, (module, where) in hooks.items()]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return result, found


def split_heads(sites: dict[str, np.ndarray], n_heads: int, d_head: int, n_kv: int | None = None,
                kinds: tuple[str, ...] = ("q", "k", "v", "z")) -> dict[str, np.ndarray]:
    """`sites` with each `hook_{kind}` for kind in `kinds` reshaped from [batch, pos, heads *
    d_head] to [batch, pos, heads, d_head] (queries and z: `n_heads`; keys and values: `n_kv`,
    default `n_heads`); other sites as they are."""
    out = dict(sites)
    for site, v in sites.items():
        kind = site.rsplit("hook_", 1)[-1]
        if kind in kinds and v.ndim == 3:
            heads = n_heads if kind in ("q", "z") else (n_kv or n_heads)
            out[site] = v.reshape(*v.shape[:2], heads, d_head)
    return out
