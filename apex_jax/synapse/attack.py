"""SYNAPSE experiment: logit bias (absolute and in units of the median clean margin), ±Δ column
push (plain, sign-aware, stable-sign neurons only) and exponent bit flips toward a target class,
evaluated on the classifier input `head.hook_cls` (the manipulations themselves: `attacks`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from apex_jax.models.model import Model
from apex_jax.synapse import attacks, rankings


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """What `attack_experiment` tries: the target class, how many of its top neurons, and the
    magnitudes of each manipulation."""

    target: int = 0
    k_percent: float = 10.0  # the target's top neurons to push / flip
    deltas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    biases: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    redirect_shares: tuple[float, ...] = (0.1, 0.25, 0.5, 0.9, 1.0)
    flip_counts: tuple[int, ...] = (0, 1, 2, 4, 8)
    bit: int = 30
    balanced: bool = True
    # logit biases in units of the median clean margin (top logit − runner-up)
    margin_multiples: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    sign_stability: float = 0.9  # the stable-sign push keeps neurons with this share of one sign


class AttackResult(dict):
    """`attack_experiment`'s result: a dict with "rows" (one per attack and magnitude: attack,
    magnitude, flip_to_target, accuracy, target_share), "target", "k_neurons", "neurons",
    "bias_to_redirect", "median_clean_margin", "stable_sign_neurons", "sign_share_of_top",
    "clean_accuracy" and "clean_target_share"; `to_pandas()` is attacks.csv."""

    def to_pandas(self, level: str = "grid"):
        """The rows as a pandas DataFrame with attacks.csv's columns ("grid": one row per attack
        and magnitude, the only level).

        Raises:
            InputError: another level. ImportError: pandas is not installed
                (`pip install "apex-jax[pandas]"`).
        """
        from apex_jax.tables import check_level, frame_from_dicts

        check_level(level, ("grid",), "AttackResult")
        return frame_from_dicts(self["rows"])


def attack_experiment(model: Model, params: Any, h: np.ndarray, labels: np.ndarray,
                      class_scores: np.ndarray, config: AttackConfig = AttackConfig()) -> AttackResult:
    """Logit bias, ±Δ column push and exponent bit flips toward `config.target`, evaluated on
    the classifier input h = `head.hook_cls` [n, H]; `class_scores` [C, H] rank each class's
    neurons (e.g. |W| of a probe on head.hook_cls). Returns an `AttackResult` (a dict of tables)."""
    kernel, bias = attacks.head_weights(params, model.config)
    H, C = kernel.shape
    t = config.target
    if not 0 <= t < C:
        raise ValueError(f"target class {t} is outside [0, {C}).")
    if np.shape(class_scores) != (C, H):
        raise ValueError(f"class_scores must be [{C}, {H}] (classes × head.hook_cls width); got {np.shape(class_scores)}.")
    labels = np.asarray(labels)
    clean_logits = attacks.apply_head(h, kernel, bias)
    clean_pred = clean_logits.argmax(1)
    order = rankings.rank(class_scores[t]).order
    k = rankings.k_count(config.k_percent, H)
    top = order[:k]
    rows = []

    def add(kind: str, magnitudes, heads):
        st = attacks.redirect_stats(attacks.apply_head(h, *heads), clean_pred, labels, t)
        for i, m in enumerate(magnitudes):
            rows.append({"attack": kind, "magnitude": float(m), "flip_to_target": float(st["flip_to_target"][i]),
                         "accuracy": float(st["accuracy"][i]), "target_share": float(st["target_share"][i])})

    add("logit_bias", config.biases, attacks.logit_bias(kernel, bias, t, config.biases))
    add("column_push", config.deltas, attacks.column_push(kernel, bias, t, top, config.deltas, config.balanced))
    add("column_push_unbalanced", config.deltas, attacks.column_push(kernel, bias, t, top, config.deltas, False))
    # sign-aware pushes: each neuron's push follows its majority activation sign over these
    # inputs; the stable variant keeps only neurons that have that sign on >= sign_stability
    _, signs, shares = attacks.activation_signs(h, top)
    add("column_push_signed", config.deltas, attacks.column_push_signed(kernel, bias, t, top, signs, config.deltas,
                                                                        config.balanced))
    stable, s_signs, _ = attacks.activation_signs(h, top, config.sign_stability)
    add("column_push_stable", config.deltas, attacks.column_push_signed(kernel, bias, t, stable, s_signs,
                                                                        config.deltas, config.balanced))
    margin = attacks.median_margin(clean_logits)
    add("logit_bias_margin", config.margin_multiples,
        attacks.logit_bias(kernel, bias, t, [m * margin for m in config.margin_multiples]))
    counts = [c for c in config.flip_counts if c <= k]
    add(f"bit_flip_{config.bit}", counts, attacks.bit_flip(kernel, bias, t, top, counts, config.bit))
    needed = attacks.bias_to_redirect(clean_logits, t, config.redirect_shares)
    return AttackResult(rows=rows, target=t, k_neurons=int(k), neurons=top.tolist(),
                        bias_to_redirect={f"{s:g}": float(b) for s, b in zip(config.redirect_shares, needed)},
                        median_clean_margin=margin, stable_sign_neurons=int(len(stable)),
                        sign_share_of_top=float(shares.mean()) if len(shares) else None,
                        clean_accuracy=float((clean_pred == labels).mean()),
                        clean_target_share=float((clean_pred == t).mean()))
