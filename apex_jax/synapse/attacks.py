"""SYNAPSE weight- and logit-space manipulations of the classifier head, never in place.

The final linear classifier reads the head's input h = `head.hook_cls` [n, H]:
logits = h @ kernel + bias, kernel [H, C]. Every manipulation here changes only that layer, so
its effect on any input follows from h and the new (kernel, bias) exactly — no forward pass of
the encoder per magnitude. `apply_head` computes that; `manipulated_params` returns the whole
parameter tree with the new head (a copy: the model is never modified), and the tests check
that `model.apply` with it gives the same logits.

* logit bias: bias[target] += b. The smallest b that sends input i to the target is
  max_{c≠t} z_ic − z_it (ties go to the lowest class index, as argmax does), so the bias that
  sends a share x of the other inputs is a quantile of those values (`bias_to_redirect`).
* column push: kernel[j, target] += Δ for the target's top neurons j; with `balanced=True`
  the other classes' columns get −Δ/(C−1) at those neurons, so each neuron's total weight is
  unchanged and the push is a pure redistribution.
* signed column push: kernel[j, target] += Δ · s_j, so that for inputs where neuron j has sign
  s_j the push raises the target logit (the unsigned push lowers it wherever h_j < 0, e.g. half
  the time for a tanh pooler unit centred at 0). The sign is taken per target class on the
  inputs the push has to move (`push_signs`): s_j(t) is neuron j's majority sign (ties +1) over
  the inputs whose clean prediction is not t. A neuron's sign often follows the class (positive
  on one class's inputs, negative on the other's), so its majority sign over *all* inputs is
  that of the majority class, and a push toward the majority class with it lowers the target
  logit of exactly the inputs it should move. Restricted to neurons whose sign holds on at
  least a share `stability` of those inputs, it raises the target's margin for every input
  where all keep their sign.
* reference push (`reference_push_columns`): the reference code's edit, kept as its own named
  mode — +Δ on the target's column at its top `reference_k`% neurons (the first
  `reference_max_cols` of them in ascending unit order, as the reference takes them), unsigned
  and unbalanced (its balancing line writes to a copy, so it has no effect), Δ 0.2–0.3.
* margins: a logit bias means little without the clean logits' scale, so biases can also be
  given in units of the median clean margin (top logit − runner-up; `median_margin`).
* bit flip: flips one exponent bit (23..30 of IEEE float32) of kernel[j, target] for the
  chosen neurons: bit 30 multiplies a weight of magnitude in [2^-126, 1) by 2^128, turns one
  in [1, 2) into inf/NaN and one in [2, 4) into a denormal below 2^-125.

The experiment (`attack_experiment`, `AttackConfig` -> `AttackResult`): logit bias (absolute and
in units of the median clean margin), ±Δ column push (plain, sign-aware, stable-sign neurons
only, the reference's) and exponent bit flips toward a target class, evaluated on
`head.hook_cls`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from apex_jax.engine.reprs import compact_repr
from apex_jax.models.model import Model
from apex_jax.synapse import rankings
from apex_jax.tables import check_level, frame_from_dicts

EXPONENT_BITS = tuple(range(23, 31))


def head_weights(params: Any, config: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The final classifier's (kernel [H, C], bias [C]) as float32 numpy copies.

    Encoders: `head.classifier`. Decoders: the `score` head of a sequence classifier (no bias:
    zeros), or for a verbalizer (pass `config`, whose `label_token_ids` pick the columns) the
    LM head's label-token columns (the tied embedding's rows when the head is tied), bias zeros.
    """
    head = params.get("head", {}) if hasattr(params, "get") else {}
    if "classifier" in head:
        layer = head["classifier"]
        return np.array(layer["kernel"], np.float32), np.array(layer["bias"], np.float32)
    if "score" in head:
        kernel = np.array(head["score"]["kernel"], np.float32)
        return kernel, np.zeros(kernel.shape[1], np.float32)
    if config is not None and getattr(config, "lm_head", False):
        if getattr(config, "tie_embeddings", False):
            w = np.asarray(params["embed"]["embedding"], np.float32).T  # [d_model, vocab]
        else:
            w = np.asarray(head["lm_head"]["kernel"], np.float32)
        ids = getattr(config, "label_token_ids", None)
        kernel = np.array(w[:, list(ids)] if ids else w, np.float32)
        return kernel, np.zeros(kernel.shape[1], np.float32)
    raise ValueError("params have no classifier head (head.classifier or a decoder's score); load the model "
                     "with num_labels=N (for a verbalizer causal LM pass its config).")


def apply_head(h: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits [n, C] (or [M, n, C] for stacked kernels [M, H, C] / biases [M, C])."""
    h = np.asarray(h, np.float32)
    return np.einsum("nh,...hc->...nc", h, kernel) + np.asarray(bias)[..., None, :]


def manipulated_params(params: Any, kernel: np.ndarray, bias: np.ndarray) -> Any:
    """A copy of `params` whose classifier is (kernel, bias); `params` is left unchanged.

    A decoder's `score` head has no bias: only a zero bias can be written there."""
    head = dict(params["head"])
    if "score" in head and "classifier" not in head:
        if np.any(np.asarray(bias) != 0):
            raise ValueError("a decoder's score head has no bias; a logit bias cannot be written into its "
                             "parameters (evaluate it on head.hook_cls with apply_head).")
        head["score"] = {**head["score"], "kernel": jax.numpy.asarray(kernel)}
        return {**params, "head": head}
    head["classifier"] = {**head["classifier"], "kernel": jax.numpy.asarray(kernel),
                          "bias": jax.numpy.asarray(bias)}
    return {**params, "head": head}


def _check_target(target: int, n_classes: int) -> None:
    if not 0 <= target < n_classes:
        raise ValueError(f"target class {target} is outside [0, {n_classes}).")


def _check_neurons(neurons: Sequence[int], width: int) -> np.ndarray:
    neurons = np.asarray(neurons, np.int64).ravel()
    if neurons.size and (neurons.min() < 0 or neurons.max() >= width):
        raise ValueError(f"neuron indices must lie in [0, {width}); got {neurons.min()}..{neurons.max()}.")
    return neurons


def bias_needed(logits: np.ndarray, target: int) -> np.ndarray:
    """Per input, the smallest float32 bias on the target logit that makes argmax pick the
    target [n] (0 where it already does). Ties: argmax takes the lowest index, so a target above
    a tied class needs a strictly larger logit (the next float32 above it)."""
    z = np.asarray(logits, np.float32)
    _check_target(target, z.shape[1])
    others = np.delete(z, target, axis=1)
    other_idx = np.delete(np.arange(z.shape[1]), target)
    best = others.max(1)
    best_idx = other_idx[others.argmax(1)]
    zt = z[:, target]
    # the logit the target must reach: a tie wins only against higher class indices
    goal = np.where(best_idx < target, np.nextafter(best, np.float32(np.inf)), best).astype(np.float32)
    need = np.maximum(goal - zt, np.float32(0))
    for _ in range(8):  # float32 rounding of zt + need may fall short by an ulp
        short = (zt + need) < goal
        if not short.any():
            break
        need = np.where(short, np.nextafter(need, np.float32(np.inf)), need)
    return np.where(z.argmax(1) == target, np.float32(0), need).astype(np.float32)


def bias_to_redirect(logits: np.ndarray, target: int, shares: Sequence[float]) -> np.ndarray:
    """The smallest bias on the target logit that sends at least each share of the inputs NOT
    already predicted as the target there [len(shares)] (the flip-to-target rate's inputs).

    Each bias is `bias_needed` plus 4 ulps of the largest |logit|: a head with the bias added
    computes h·W + (b + Δ), not (h·W + b) + Δ, and the two round differently (by how numpy's
    einsum happens to vectorise), so the exact bias could leave an input one ulp short."""
    z = np.asarray(logits, np.float32)
    slack = np.float32(4) * np.spacing(np.abs(z).max() if z.size else np.float32(1))
    need = bias_needed(z, target)
    need = np.sort(need[z.argmax(1) != target]) + slack
    n = len(need)
    out = []
    for x in shares:
        if not 0 <= x <= 1:
            raise ValueError(f"shares must lie in [0, 1]; got {x}.")
        m = int(np.ceil(x * n - 1e-9))
        out.append(0.0 if m == 0 else float(need[m - 1]))
    return np.asarray(out, np.float32)


def logit_bias(kernel, bias, target: int, magnitudes: Sequence[float]):
    """Stacked heads [M, H, C], [M, C] with bias[target] += magnitude."""
    _check_target(target, len(bias))
    m = np.asarray(magnitudes, np.float32)
    b = np.repeat(np.asarray(bias, np.float32)[None], len(m), 0)
    b[:, target] += m
    return np.repeat(np.asarray(kernel, np.float32)[None], len(m), 0), b


def column_push(kernel, bias, target: int, neurons: Sequence[int], deltas: Sequence[float],
                balanced: bool = True):
    """Stacked heads with kernel[neurons, target] += Δ (and −Δ/(C−1) on the other classes'
    columns at those neurons if `balanced`)."""
    kernel = np.asarray(kernel, np.float32)
    H, C = kernel.shape
    _check_target(target, C)
    neurons = _check_neurons(neurons, H)
    d = np.asarray(deltas, np.float32)
    k = np.repeat(kernel[None], len(d), 0)
    k[:, neurons, target] += d[:, None]
    if balanced and C > 1:
        others = np.delete(np.arange(C), target)
        k[:, neurons[:, None], others[None, :]] -= (d / (C - 1))[:, None, None]
    return k, np.repeat(np.asarray(bias, np.float32)[None], len(d), 0)


def activation_signs(h: np.ndarray, neurons: Sequence[int], stability: float = 0.0):
    """Majority activation sign of each neuron over inputs h [n, H], and the share of inputs
    having it; neurons whose share is below `stability` are dropped (order kept).

    Returns:
        (neurons [m] int64, signs [m] float32 in {−1, +1} (ties: +1), shares [m] float64).
    """
    h = np.asarray(h, np.float32)
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"h must be non-empty [n, H]; got shape {h.shape}.")
    if not 0 <= stability <= 1:
        raise ValueError(f"stability must lie in [0, 1]; got {stability}.")
    neurons = _check_neurons(neurons, h.shape[1])
    pos = (h[:, neurons] > 0).mean(0)
    neg = (h[:, neurons] < 0).mean(0)
    signs = np.where(pos >= neg, 1.0, -1.0).astype(np.float32)
    shares = np.maximum(pos, neg).astype(np.float64)
    keep = shares >= stability
    return neurons[keep], signs[keep], shares[keep]


def push_signs(h: np.ndarray, neurons: Sequence[int], clean_pred: np.ndarray, target: int,
               stability: float = 0.0):
    """The signs of a signed push toward `target`: `activation_signs` over the inputs the push
    has to move, i.e. those whose clean prediction `clean_pred` [n] is not the target (all
    inputs when every one already predicts it: nothing is left to move).

    Returns:
        (neurons [m], signs [m] in {−1, +1}, shares [m]) as `activation_signs`, and the number
        of inputs the signs were taken over.
    """
    h = np.asarray(h, np.float32)
    clean_pred = np.asarray(clean_pred)
    if clean_pred.shape != h.shape[:1]:
        raise ValueError(f"clean_pred must be [n] = [{h.shape[0]}]; got shape {clean_pred.shape}.")
    pushed = clean_pred != target
    rows = h[pushed] if pushed.any() else h
    return (*activation_signs(rows, neurons, stability), int(len(rows)))


def reference_push_columns(order: Sequence[int], k_percent: float, max_cols: int | None) -> np.ndarray:
    """The columns the reference code's push edits: the top `k_percent`% of a ranking (`order`,
    best first), in ascending unit order, the first `max_cols` of them (None: all)."""
    order = np.asarray(order, np.int64)
    cols = np.sort(order[: rankings.k_count(k_percent, len(order))])
    return cols if max_cols is None else cols[: int(max_cols)]


def column_push_signed(kernel, bias, target: int, neurons: Sequence[int], signs: Sequence[float],
                       deltas: Sequence[float], balanced: bool = True):
    """Stacked heads with kernel[j, target] += Δ·s_j (and −Δ·s_j/(C−1) on the other classes'
    columns if `balanced`): for an input h the target's logit gap to any other class grows by
    Δ · Σ_j s_j h_j · (1 + 1/(C−1)) (balanced) — positive wherever every h_j has sign s_j."""
    kernel = np.asarray(kernel, np.float32)
    H, C = kernel.shape
    _check_target(target, C)
    neurons = _check_neurons(neurons, H)
    s = np.asarray(signs, np.float32).ravel()
    if s.shape != neurons.shape or not np.isin(s, (-1.0, 1.0)).all():
        raise ValueError(f"signs must be ±1, one per neuron ({len(neurons)}); got {s.tolist()[:10]}.")
    d = np.asarray(deltas, np.float32)
    k = np.repeat(kernel[None], len(d), 0)
    k[:, neurons, target] += d[:, None] * s[None, :]
    if balanced and C > 1:
        others = np.delete(np.arange(C), target)
        k[:, neurons[:, None], others[None, :]] -= (d[:, None] * s[None, :] / (C - 1))[:, :, None]
    return k, np.repeat(np.asarray(bias, np.float32)[None], len(d), 0)


def clean_margins(logits: np.ndarray) -> np.ndarray:
    """Top logit minus the runner-up per input [n] (>= 0): how far each prediction is from a flip."""
    z = np.sort(np.asarray(logits, np.float64), axis=1)
    if z.shape[1] < 2:
        raise ValueError("margins need at least 2 classes.")
    return z[:, -1] - z[:, -2]


def median_margin(logits: np.ndarray) -> float:
    """The median clean margin (`clean_margins`): the unit logit biases are expressed in."""
    return float(np.median(clean_margins(logits)))


def flip_bits(values: np.ndarray, bit: int) -> np.ndarray:
    """Flips bit `bit` of each float32 value's IEEE-754 representation (a copy)."""
    if not 0 <= bit < 32:
        raise ValueError(f"bit must be in [0, 32); exponent bits are {EXPONENT_BITS[0]}..{EXPONENT_BITS[-1]}.")
    v = np.array(values, np.float32)
    return (v.view(np.uint32) ^ np.uint32(1 << bit)).view(np.float32)


def bit_flip(kernel, bias, target: int, neurons: Sequence[int], counts: Sequence[int], bit: int = 30):
    """Stacked heads where the exponent bit `bit` of kernel[j, target] is flipped for the first
    `count` of `neurons` (ranked order), one head per count."""
    kernel = np.asarray(kernel, np.float32)
    H, C = kernel.shape
    _check_target(target, C)
    neurons = _check_neurons(neurons, H)
    ks = []
    for c in counts:
        if not 0 <= c <= len(neurons):
            raise ValueError(f"flip counts must lie in [0, {len(neurons)}]; got {c}.")
        k = kernel.copy()
        sel = neurons[:c]
        k[sel, target] = flip_bits(k[sel, target], bit)
        ks.append(k)
    return np.stack(ks), np.repeat(np.asarray(bias, np.float32)[None], len(ks), 0)


def redirect_stats(logits: np.ndarray, clean_pred: np.ndarray, labels: np.ndarray, target: int) -> dict:
    """Share of inputs not predicted as the target before that are now (flip-to-target rate; NaN
    if none was), accuracy, and the target's share, for logits [M, n, C] -> arrays [M]."""
    logits = np.asarray(logits)
    with np.errstate(invalid="ignore"):
        pred = np.nan_to_num(logits, nan=-np.inf).argmax(-1)  # inf weights can give nan logits
    eligible = np.asarray(clean_pred) != target
    # NaN, not 0, when every input already predicts the target: there is nothing to redirect
    n_eligible = int(eligible.sum())
    flips = ((pred == target) & eligible).sum(-1) / n_eligible if n_eligible else np.full(pred.shape[:-1], np.nan)
    return {"flip_to_target": flips, "accuracy": (pred == np.asarray(labels)).mean(-1),
            "target_share": (pred == target).mean(-1)}


# ----------------------------------------------------------------------------- the experiment
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
    # the reference code's push (notebook cells 74–76): the target's top 20–25% neurons, at most
    # 120 columns in ascending unit order, +Δ 0.2–0.3 on the target's column only, unsigned
    reference_k: float = 25.0
    reference_deltas: tuple[float, ...] = (0.0, 0.2, 0.3)
    reference_max_cols: int | None = 120


class AttackResult(dict):
    """`attack_experiment`'s result: a dict with "rows" (one per attack and magnitude: attack,
    magnitude, flip_to_target, accuracy, target_share), "target", "k_neurons", "neurons",
    "bias_to_redirect", "median_clean_margin", "stable_sign_neurons", "sign_share_of_top",
    "sign_inputs" (the inputs the push signs were taken over: those not predicted as the
    target), "reference_push" (its columns and Δ), "clean_accuracy" and "clean_target_share";
    `to_pandas()` is attacks.csv. Attacks: logit_bias, column_push (balanced),
    column_push_unbalanced, column_push_signed, column_push_stable, column_push_reference,
    logit_bias_margin, bit_flip_<bit>."""

    def __repr__(self) -> str:
        rows = self.get("rows", [])
        flips = [r["flip_to_target"] for r in rows if r["flip_to_target"] == r["flip_to_target"]]  # not NaN
        return compact_repr("AttackResult", target=self.get("target"), k_neurons=self.get("k_neurons"),
                            attacks=len({r["attack"] for r in rows}), rows=len(rows),
                            clean_accuracy=self.get("clean_accuracy"), clean_target_share=self.get("clean_target_share"),
                            median_clean_margin=self.get("median_clean_margin"),
                            max_flip_to_target=max(flips) if flips else None)

    def to_pandas(self, level: str = "grid"):
        """The rows as a pandas DataFrame with attacks.csv's columns ("grid": one row per attack
        and magnitude, the only level).

        Raises:
            InputError: another level. ImportError: pandas is not installed
                (`pip install "apex-jax[pandas]"`).
        """
        check_level(level, ("grid",), "AttackResult")
        return frame_from_dicts(self["rows"])


def attack_experiment(model: Model, params: Any, h: np.ndarray, labels: np.ndarray,
                      class_scores: np.ndarray, config: AttackConfig = AttackConfig()) -> AttackResult:
    """Logit bias, ±Δ column push and exponent bit flips toward `config.target`, evaluated on
    the classifier input h = `head.hook_cls` [n, H]; `class_scores` [C, H] rank each class's
    neurons (e.g. |W| of a probe on head.hook_cls). Returns an `AttackResult` (a dict of tables)."""
    kernel, bias = head_weights(params, model.config)
    H, C = kernel.shape
    t = config.target
    if not 0 <= t < C:
        raise ValueError(f"target class {t} is outside [0, {C}).")
    if np.shape(class_scores) != (C, H):
        raise ValueError(f"class_scores must be [{C}, {H}] (classes × head.hook_cls width); got {np.shape(class_scores)}.")
    labels = np.asarray(labels)
    clean_logits = apply_head(h, kernel, bias)
    clean_pred = clean_logits.argmax(1)
    order = rankings.rank(class_scores[t]).order
    k = rankings.k_count(config.k_percent, H)
    top = order[:k]
    rows = []

    def add(kind: str, magnitudes, heads):
        st = redirect_stats(apply_head(h, *heads), clean_pred, labels, t)
        for i, m in enumerate(magnitudes):
            rows.append({"attack": kind, "magnitude": float(m), "flip_to_target": float(st["flip_to_target"][i]),
                         "accuracy": float(st["accuracy"][i]), "target_share": float(st["target_share"][i])})

    add("logit_bias", config.biases, logit_bias(kernel, bias, t, config.biases))
    add("column_push", config.deltas, column_push(kernel, bias, t, top, config.deltas, config.balanced))
    add("column_push_unbalanced", config.deltas, column_push(kernel, bias, t, top, config.deltas, False))
    # sign-aware pushes: each neuron's push follows its majority activation sign over the inputs
    # to move (clean prediction not the target; `push_signs`); the stable variant keeps only
    # neurons that have that sign on >= sign_stability of them
    _, signs, shares, n_signed = push_signs(h, top, clean_pred, t)
    add("column_push_signed", config.deltas, column_push_signed(kernel, bias, t, top, signs, config.deltas,
                                                                        config.balanced))
    stable, s_signs, _, _ = push_signs(h, top, clean_pred, t, config.sign_stability)
    add("column_push_stable", config.deltas, column_push_signed(kernel, bias, t, stable, s_signs,
                                                                        config.deltas, config.balanced))
    # the reference code's push: unsigned, unbalanced, its k and column cap
    ref_cols = reference_push_columns(order, config.reference_k, config.reference_max_cols)
    add("column_push_reference", config.reference_deltas,
        column_push(kernel, bias, t, ref_cols, config.reference_deltas, balanced=False))
    margin = median_margin(clean_logits)
    add("logit_bias_margin", config.margin_multiples,
        logit_bias(kernel, bias, t, [m * margin for m in config.margin_multiples]))
    counts = [c for c in config.flip_counts if c <= k]
    add(f"bit_flip_{config.bit}", counts, bit_flip(kernel, bias, t, top, counts, config.bit))
    needed = bias_to_redirect(clean_logits, t, config.redirect_shares)
    return AttackResult(rows=rows, target=t, k_neurons=int(k), neurons=top.tolist(),
                        bias_to_redirect={f"{s:g}": float(b) for s, b in zip(config.redirect_shares, needed)},
                        median_clean_margin=margin, stable_sign_neurons=int(len(stable)),
                        sign_share_of_top=float(shares.mean()) if len(shares) else None, sign_inputs=n_signed,
                        reference_push={"k_percent": config.reference_k, "columns": int(len(ref_cols)),
                                        "max_cols": config.reference_max_cols,
                                        "deltas": list(config.reference_deltas)},
                        clean_accuracy=float((clean_pred == labels).mean()),
                        clean_target_share=float((clean_pred == t).mean()))
