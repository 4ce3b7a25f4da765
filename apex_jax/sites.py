"""Activation site names (TransformerLens-style hook names) and their layouts.

Every architecture exposes the same site list (DESIGN.md, "Activation sites"):

| site                          | shape                              | what it is                          |
|-------------------------------|------------------------------------|-------------------------------------|
| `hook_embed`                  | [batch, pos, d_model]              | embedding output (= HF hidden_states[0]) |
| `blocks.{i}.hook_resid_pre`   | [batch, pos, d_model]              | block input (= HF hidden_states[i])  |
| `blocks.{i}.attn.hook_q/k/v`  | [batch, pos, n_heads, d_head]      | projected queries, keys, values     |
| `blocks.{i}.attn.hook_pattern`| [batch, n_heads, query_pos, key_pos] | softmax attention weights         |
| `blocks.{i}.attn.hook_z`      | [batch, pos, n_heads, d_head]      | attention-weighted values           |
| `blocks.{i}.hook_attn_out`    | [batch, pos, d_model]              | attention output projection         |
| `blocks.{i}.hook_resid_mid`   | [batch, pos, d_model]              | after attention + residual (+ LN for post-LN) |
| `blocks.{i}.mlp.hook_pre`     | [batch, pos, d_mlp]                | MLP pre-activation                  |
| `blocks.{i}.mlp.hook_post`    | [batch, pos, d_mlp]                | MLP neurons after the activation    |
| `blocks.{i}.hook_mlp_out`     | [batch, pos, d_model]              | MLP output projection               |
| `blocks.{i}.hook_resid_post`  | [batch, pos, d_model]              | block output (= HF hidden_states[i+1]) |
| `ln_final.hook_normalized`    | [batch, pos, d_model]              | decoders: final norm output (= HF hidden_states[-1]) |
| `head.hook_cls`               | [batch, d_model]                   | the vector the final classifier reads |
| `head.hook_logits`            | [batch, n_classes]                 | classifier logits ([batch, vocab] for a causal-LM head) |

Decoders (`apex_jax.models.decoder`) have the same sites plus `ln_final.hook_normalized`; with
grouped-query attention their `attn.hook_k`/`attn.hook_v` are [batch, pos, n_kv_heads, d_head],
and `head.hook_cls` is the final-normed vector at the classifier token (the last real token).

The "position axis" of a site is the axis that token-position selections index
(the query axis for `hook_pattern`); head sites have none.
"""

from __future__ import annotations

import re
from typing import Iterable

BLOCK_SITES = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
HEAD_SITES = ("head.hook_cls", "head.hook_logits")
FINAL_NORM_SITE = "ln_final.hook_normalized"  # decoders only (TransformerLens' name)

_LAYOUTS = {
    "hook_embed": "[batch, pos, d_model]",
    "hook_resid_pre": "[batch, pos, d_model]",
    "hook_resid_mid": "[batch, pos, d_model]",
    "hook_resid_post": "[batch, pos, d_model]",
    "hook_attn_out": "[batch, pos, d_model]",
    "hook_mlp_out": "[batch, pos, d_model]",
    "attn.hook_q": "[batch, pos, n_heads, d_head]",
    "attn.hook_k": "[batch, pos, n_heads, d_head]",
    "attn.hook_v": "[batch, pos, n_heads, d_head]",
    "attn.hook_z": "[batch, pos, n_heads, d_head]",
    "attn.hook_pattern": "[batch, n_heads, query_pos, key_pos]",
    "mlp.hook_pre": "[batch, pos, d_mlp]",
    "mlp.hook_post": "[batch, pos, d_mlp]",
    FINAL_NORM_SITE: "[batch, pos, d_model]",
    "head.hook_cls": "[batch, d_model]",
    "head.hook_logits": "[batch, n_classes]",
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def site_names(n_layers: int, has_head: bool, final_norm: bool = False) -> tuple[str, ...]:
    """All site names of a model, in forward order (`final_norm`: a decoder's final norm site)."""
    names = ["hook_embed"]
    for i in range(n_layers):
        names += [f"blocks.{i}.{s}" for s in BLOCK_SITES]
    if final_norm:
        names.append(FINAL_NORM_SITE)
    if has_head:
        names += list(HEAD_SITES)
    return tuple(names)


def parse(site: str) -> tuple[int | None, str]:
    """Splits a site name into (block index or None, local name)."""
    m = _BLOCK_RE.match(site)
    if m:
        return int(m.group(1)), m.group(2)
    return None, site


def layout(site: str) -> str:
    """The documented axis layout of a site, e.g. '[batch, pos, d_model]'."""
    return _LAYOUTS.get(parse(site)[1], "?")


def position_axis(site: str) -> int | None:
    """Axis that position selections index: the query axis for patterns, none for head sites."""
    local = parse(site)[1]
    if local.startswith("head."):
        return None
    return 2 if local == "attn.hook_pattern" else 1


def resume_block(site: str, n_layers: int) -> int:
    """The first block a suffix run must execute so that `site` is inside the suffix.

    `hook_embed` and `blocks.{i}.hook_resid_post` are boundary sites: their value is the
    residual stream entering block 0 / block i+1, so a suffix starting there applies them first.
    """
    block, local = parse(site)
    if block is None:
        return 0 if site == "hook_embed" else n_layers
    return block + 1 if local == "hook_resid_post" else block


def boundary_site(block: int) -> str:
    """The site whose value is the residual stream entering `block`."""
    return "hook_embed" if block == 0 else f"blocks.{block - 1}.hook_resid_post"


def describe(sites: Iterable[str]) -> str:
    """Compact, readable listing of site names for error messages."""
    sites = list(sites)
    blocks = sorted({b for b in (parse(s)[0] for s in sites) if b is not None})
    parts = [s for s in sites if parse(s)[0] is None and s.startswith("hook")]
    if blocks:
        rng = f"{blocks[0]}..{blocks[-1]}"
        parts += [f"blocks.{{{rng}}}.{s}" for s in BLOCK_SITES]
    parts += [s for s in sites if s == FINAL_NORM_SITE]
    parts += [s for s in sites if s.startswith("head.")]
    return ", ".join(parts)
