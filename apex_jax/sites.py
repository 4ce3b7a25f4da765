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

Site specs. The CLI and the library name site sets with one mini-language (`parse_sites`): a
comma-separated list whose items are a preset (`SITE_PRESETS`), a layer number (`3`: that block's
`hook_resid_post`), a layer range with a local name (`2-4:hook_resid_post`, `1:mlp.hook_post`) or
a site name.
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
FINAL_NORM_SITE = "ln_final.hook_normalized"  # decoders and ModernBERT (TransformerLens' name)

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


EMBED_SITE = "hook_embed"
HEAD_INPUT_SITE = "head.hook_cls"  # the vector the final classifier reads

SITE_PRESETS = {
    "resid_post": "every block's hook_resid_post (the APEX default: every layer's output)",
    "blocks": "the same as resid_post (every block's output)",
    "embed": "hook_embed only (input perturbation)",
    "mlp_post": "every block's mlp.hook_post (the MLP neurons)",
    "all": "hook_embed and every block's hook_resid_post (the SYNAPSE probe layers)",
}


def block_site(block: int, local: str) -> str:
    """The name of site `local` (e.g. "hook_resid_post", "mlp.hook_post") of block `block`."""
    return f"blocks.{int(block)}.{local}"


def site_names(n_layers: int, has_head: bool, final_norm: bool = False) -> tuple[str, ...]:
    """All site names of a model, in forward order (`final_norm`: a decoder's final norm site)."""
    names = [EMBED_SITE]
    for i in range(n_layers):
        names += [block_site(i, s) for s in BLOCK_SITES]
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
    return EMBED_SITE if block == 0 else block_site(block - 1, "hook_resid_post")


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


def preset_sites(preset: str, n_layers: int) -> list[str]:
    """The sites of a preset of `SITE_PRESETS` for a model with `n_layers` blocks."""
    outputs = [block_site(i, "hook_resid_post") for i in range(n_layers)]
    if preset in ("resid_post", "blocks"):
        return outputs
    if preset == "embed":
        return [EMBED_SITE]
    if preset == "mlp_post":
        return [block_site(i, "mlp.hook_post") for i in range(n_layers)]
    if preset == "all":
        return [EMBED_SITE, *outputs]
    raise ValueError(f"unknown site preset {preset!r}; presets: {', '.join(SITE_PRESETS)}.")


def parse_sites(model_or_sites, spec: str) -> list[str]:
    """The site names a spec selects, in spec order with repeats dropped.

    Args:
        model_or_sites: an `apex_jax.Model` (its `sites`) or a sequence of valid site names.
        spec: comma-separated items, each a preset (`resid_post`, `blocks`, `embed`, `mlp_post`,
            `all`), a layer number (`3` = `blocks.3.hook_resid_post`), a layer range with a local
            site name (`2-4:hook_resid_post`, `1:mlp.hook_post`) or a site name.

    Raises:
        ValueError: an empty spec, a layer outside the model, or an unknown site (the message
            lists the presets, the forms and the valid site names).
    """
    valid = tuple(getattr(model_or_sites, "sites", model_or_sites))
    n_layers = 1 + max((b for b in (parse(s)[0] for s in valid) if b is not None), default=-1)
    out: list[str] = []
    unknown: list[str] = []
    for item in (p.strip() for p in str(spec).split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(.+))?", item)
        if item in SITE_PRESETS:
            names = preset_sites(item, n_layers)
        elif m:
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if not 0 <= lo <= hi < n_layers:
                raise ValueError(f"layer range {item!r} is outside 0-{n_layers - 1}.")
            names = [block_site(i, m.group(3) or "hook_resid_post") for i in range(lo, hi + 1)]
        else:
            names = [item]
        unknown += [s for s in names if s not in valid]
        out += [s for s in names if s not in out]
    if unknown or not out:
        raise ValueError(
            f"unknown site(s) {unknown or [spec]}; use a preset ({', '.join(SITE_PRESETS)}), layer numbers "
            f"0-{n_layers - 1}, a layer range like 2-4:hook_resid_post, or site names: {describe(valid)}."
        )
    return out
