"""FLOP counts of BERT-family forwards (matmuls only: 2·MACs of the dense layers and of the
attention products QKᵀ and PV; LayerNorm, GELU, softmax, bias adds and noise are not counted).

    layer(L, q) = 2·d²·(2L + 2q)      K, V projections on L tokens; Q, O projections on q tokens
                + 2·2·d·d_mlp·q         MLP on q tokens
                + 2·2·q·L·d             QKᵀ and PV for q queries over L keys
    head        = 2·d² + 2·d·C          pooler + classifier on [CLS]

A full forward at length L is Σ_layers layer(L, L) + head. apex-jax's engine skips the cached
prefix layers and, with `head_only`, computes queries/MLP of the last layer for [CLS] only
(q = 1).
"""

from __future__ import annotations


def layer(cfg, L: int, q: int) -> float:
    d, dm = cfg.d_model, cfg.d_mlp
    return 2.0 * d * d * (2 * L + 2 * q) + 4.0 * d * dm * q + 4.0 * q * L * d


def head(cfg) -> float:
    return 2.0 * cfg.d_model * cfg.d_model + 2.0 * cfg.d_model * (cfg.n_classes or 0)


def full_forward(cfg, L: int) -> float:
    """A plain forward (what the PyTorch baselines run) at sequence length L."""
    return cfg.n_layers * layer(cfg, L, L) + head(cfg)


def suffix_forward(cfg, L: int, start: int, cls_only_last: bool) -> float:
    """One perturbed forward of the engine: layers start..n-1 at padded length L, plus head."""
    n = cfg.n_layers
    f = sum(layer(cfg, L, 1 if (cls_only_last and i == n - 1) else L) for i in range(start, n))
    return f + head(cfg)


def prefix_forward(cfg, L: int, start: int) -> float:
    return start * layer(cfg, L, L)
