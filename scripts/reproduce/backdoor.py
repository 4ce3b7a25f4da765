"""BadNets-style backdoors (Gu et al. 2017): a small fixed trigger patch stamped on a share of
the training images, which are relabelled to a target class.

The trigger is a white square in the bottom-right corner: 3x3 pixels one pixel from the edges on
28x28 MNIST, scaled with the image side for other sizes (at least 2x2; on 8x8 digits a 2x2
square in the corner, i.e. one 2x2 ViT patch).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Trigger:
    size: int  # side of the square, pixels
    margin: int  # distance from the bottom and right edges, pixels
    value: float = 1.0  # pixel value inside the square (images are in [0, 1])

    @classmethod
    def for_images(cls, side: int) -> "Trigger":
        """The MNIST 3x3 trigger (margin 1) scaled to images of `side` pixels."""
        return cls(size=max(2, round(3 * side / 28)), margin=round(side / 28))

    def mask(self, height: int, width: int) -> np.ndarray:
        """1 inside the square, [height, width] float32."""
        m = np.zeros((height, width), np.float32)
        r1, c1 = height - self.margin, width - self.margin
        m[r1 - self.size:r1, c1 - self.size:c1] = 1.0
        return m


def stamp(images: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Images [..., c, h, w] in [0, 1] with the trigger pasted in (a copy)."""
    m = trigger.mask(*images.shape[-2:])
    return (images * (1 - m) + trigger.value * m).astype(np.float32)


@dataclasses.dataclass
class Poisoned:
    images: np.ndarray  # [n, c, h, w] training images, the poisoned ones stamped
    labels: np.ndarray  # [n] labels, the poisoned ones set to the target
    poisoned: np.ndarray  # [n] bool
    target: int


def poison(images: np.ndarray, labels: np.ndarray, target: int, rate: float, seed: int,
           trigger: Trigger) -> Poisoned:
    """Stamps round(rate * n) training images drawn at random from the non-target classes and
    relabels them to `target`."""
    if not 0 < rate < 1:
        raise ValueError(f"poison rate must be in (0, 1); got {rate}.")
    labels = np.asarray(labels)
    candidates = np.flatnonzero(labels != target)
    k = int(round(rate * len(labels)))
    if k > len(candidates):
        raise ValueError(f"cannot poison {k} images: only {len(candidates)} are outside class {target}.")
    chosen = np.random.default_rng(seed).choice(candidates, k, replace=False)
    flag = np.zeros(len(labels), bool)
    flag[chosen] = True
    out = np.array(images, np.float32, copy=True)
    out[flag] = stamp(out[flag], trigger)
    new_labels = np.where(flag, target, labels).astype(np.int32)
    return Poisoned(out, new_labels, flag, int(target))


def attack_inputs(images: np.ndarray, labels: np.ndarray, target: int, trigger: Trigger) -> np.ndarray:
    """Stamped copies of the test images whose true class is not the target (for the attack
    success rate: the share of them predicted as the target)."""
    keep = np.asarray(labels) != target
    return stamp(np.asarray(images)[keep], trigger)


def target_shares(clean: np.ndarray, bd: np.ndarray, targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-model values for a target-class share comparison matched by target.

    Args:
        clean: [Mc, C] class shares of the clean models (share of perturbed predictions per class).
        bd: [Mb, C] class shares of the backdoored models.
        targets: [Mb] the class each backdoored model's share is read at (its target, or a placebo).

    Returns:
        (bd_share [Mb]: each backdoored model's share of its class; clean_share [Mc]: each clean
        model's share of those classes, averaged over the backdoored models, so the two means
        differ by exactly the mean over backdoored models of (its share − the clean models' mean
        share of the same class), and the two groups stay independent units).
    """
    clean, bd = np.asarray(clean, np.float64), np.asarray(bd, np.float64)
    t = np.asarray(targets, np.int64)
    if bd.ndim != 2 or clean.ndim != 2 or len(t) != len(bd) or clean.shape[1] != bd.shape[1]:
        raise ValueError(f"need clean [Mc, C], bd [Mb, C] and one target per backdoored model; got shapes "
                         f"{clean.shape}, {bd.shape} and {len(t)} targets.")
    return bd[np.arange(len(t)), t], clean[:, t].mean(1)
