"""The model zoo of the reproduction: small ViTs trained from scratch, in groups of one kind.

Kinds (every member of every kind trains on the same `n_train` images: the first `n_train` of
the stratified train split, so they are close to class-balanced):

- ``clean``: true labels; seeds 0..n-1 (initialization and batch order).
- ``random``: labels drawn uniformly at random (a new draw per seed; no claim uses this kind
  now: claim 2 takes the label-noise series' fitted ends, below). With `random_recipe`
  "clean" (the default) member i is trained exactly like clean member i: the same seed (so the
  same initialization and batch order), learning rate, weight decay, schedule and epochs; only
  the labels differ, so a difference between the two groups cannot come from the recipe. With
  "fit" (the earlier recipe) they train until every model fits its labels (training-time
  accuracy >= `fit_threshold`, at most `random_max_epochs` epochs, constant learning rate
  `random_learning_rate`, no weight decay, seeds 100+i).
- ``noise-XXX`` (`noise_kind`): a label-noise group: XXX% of the images (an exact share, drawn
  per seed) get a label drawn uniformly at random, the rest keep their true label; trained with
  the "fit" recipe above (to fit its labels), seeds 300+i at every noise level (the same
  initializations and batch orders across levels). ``noise-100`` is a random-label group
  trained to fit; ``noise-000`` a clean group trained with the fit recipe.
- ``backdoor``: BadNets (`backdoor.poison`): `poison_rate` of the images, drawn from the other
  classes, stamped with the trigger and relabelled to the member's target class; targets
  cycle through (0, 2, 4, ...) so several target classes are covered.

A group trains all its members at once (`ensembles.train_ensemble`, orbax checkpoints every
epoch in the group folder, resumable) and saves every member as a Hugging Face folder
(`member-{i}/`) plus `group.json` (settings, per-member metrics), written last. The folder name
carries a hash of the settings, so quick and full zoos never mix; a finished group is loaded
instead of retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

import apex_jax
from apex_jax import Model
from apex_jax.data import Dataset, load_dataset, split_dataset
from . import backdoor, ensembles, vit

KINDS = ("clean", "random", "backdoor")
RANDOM_RECIPES = ("clean", "fit")
NOISE_PREFIX = "noise-"


def noise_kind(share: float) -> str:
    """The kind name of a label-noise group: 0.25 -> "noise-025" (whole percents only)."""
    pct = round(100 * share)
    if not 0 <= pct <= 100 or abs(100 * share - pct) > 1e-9:
        raise ValueError(f"label-noise share {share!r} must be a whole percent in [0, 1].")
    return f"{NOISE_PREFIX}{pct:03d}"


def noise_share(kind: str) -> float | None:
    """The label-noise share of a `noise_kind` name; None for every other kind."""
    if not kind.startswith(NOISE_PREFIX) or not kind[len(NOISE_PREFIX):].isdigit():
        return None
    return int(kind[len(NOISE_PREFIX):]) / 100


def noisy_labels(labels: np.ndarray, share: float, n_classes: int, seed: int) -> np.ndarray:
    """`labels` [n] with round(share × n) of them (drawn by `seed`) replaced by uniform random
    classes (which may equal the true one, as in the random-label kind)."""
    rng = np.random.default_rng([8, seed])
    out = np.array(labels, copy=True)
    pick = rng.choice(len(out), int(round(share * len(out))), replace=False)
    out[pick] = rng.integers(0, n_classes, len(pick))
    return out


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    data: str = "mnist5k"
    size: str = "tiny"
    split_seed: int = 0
    n_train: int = 2000
    n_models: int = 14  # claim 4 evaluates every member: 14 + 14 models are its units
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    random_max_epochs: int = 120
    random_learning_rate: float = 1e-3
    fit_threshold: float = 0.99
    poison_rate: float = 0.1
    random_recipe: str = "clean"  # "clean": the clean group's recipe and seeds; "fit": train to fit
    checkpoint_every: int = 5  # epochs between orbax checkpoints of a group's training (each costs ~1 s at full size)

    @classmethod
    def quick(cls) -> "ZooConfig":
        """The zoo of every claim's quick mode (digits, micro ViT, a few models)."""
        return cls(data="digits", size="micro", n_train=600, n_models=6, epochs=16, batch_size=32,
                   learning_rate=5e-3, random_max_epochs=30, random_learning_rate=2e-3, checkpoint_every=1000)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


@dataclasses.dataclass
class Group:
    kind: str
    model: Model  # the architecture (`vit.template`; compiled kernels are keyed by its config)
    params: list  # one parameter tree per member
    members: list[dict]  # seed, target (backdoor), folder, metrics
    info: dict  # group.json

    @property
    def targets(self) -> list[int | None]:
        return [m.get("target") for m in self.members]


def splits(cfg: ZooConfig) -> dict[str, Dataset]:
    """{"train": the zoo's training images, "test": the test split, "val": the validation split
    (never trained on, never used for model selection here: held-out inputs disjoint from the
    test split)}."""
    s = split_dataset(load_dataset(cfg.data), seed=cfg.split_seed)
    train = s["train"]
    return {"train": train.subset(np.arange(min(cfg.n_train, len(train)))), "test": s["test"], "val": s["val"]}


def target_of(i: int, n_classes: int) -> int:
    return (2 * i) % n_classes


def group_dir(work: str | Path, cfg: ZooConfig, kind: str) -> Path:
    return Path(work) / "zoo" / f"{cfg.data}-{cfg.size}-{cfg.key()}" / kind


def get_group(cfg: ZooConfig, kind: str, work: str | Path, log: Callable[[str], None] = print) -> Group:
    """Loads a finished group from `work`, or trains it (see the module docstring)."""
    if kind not in KINDS and noise_share(kind) is None:
        raise ValueError(f"unknown zoo kind {kind!r}; choose from {KINDS} or {NOISE_PREFIX}000..{NOISE_PREFIX}100.")
    folder = group_dir(work, cfg, kind)
    model = vit.template(splits(cfg)["train"], cfg.size)
    if not (folder / "group.json").exists():
        _train_group(cfg, kind, folder, model, log)
    info = json.loads((folder / "group.json").read_text())
    params = [apex_jax.load(str(folder / m["folder"])).params for m in info["members"]]
    return Group(kind, model, params, info["members"], info)


def _train_group(cfg: ZooConfig, kind: str, folder: Path, model: Model, log) -> None:
    t0 = time.perf_counter()
    sp = splits(cfg)
    train, test = sp["train"], sp["test"]
    n, m, C = len(train), cfg.n_models, train.n_classes
    if kind == "random" and cfg.random_recipe not in RANDOM_RECIPES:
        raise ValueError(f"unknown random_recipe {cfg.random_recipe!r}; choose from {RANDOM_RECIPES}.")
    paired = kind == "random" and cfg.random_recipe == "clean"
    share = noise_share(kind)
    fit = (kind == "random" and not paired) or share is not None  # train until every member fits its labels
    # paired random-label members share the clean members' seeds (initialization, batch order)
    base = 0 if paired else 300 if share is not None else {"clean": 0, "random": 100, "backdoor": 200}[kind]
    seeds = [base + i for i in range(m)]
    trigger = backdoor.Trigger.for_images(train.inputs.shape[-1])
    members = np.tile(np.arange(n), (m, 1))
    targets: list[int | None] = [None] * m
    if kind == "clean":
        x, y = vit.pixels(model, train.inputs), np.tile(train.labels, (m, 1))
    elif kind == "random":
        x = vit.pixels(model, train.inputs)
        y = np.stack([np.random.default_rng([7, s]).integers(0, C, n) for s in seeds])
    elif share is not None:
        x = vit.pixels(model, train.inputs)
        y = np.stack([noisy_labels(train.labels, share, C, s) for s in seeds])
    else:
        targets = [target_of(i, C) for i in range(m)]
        poisoned = [backdoor.poison(train.inputs, train.labels, t, cfg.poison_rate, s, trigger)
                    for t, s in zip(targets, seeds)]
        x = vit.pixels(model, np.stack([p.images for p in poisoned]))
        y = np.stack([p.labels for p in poisoned])
    if fit:
        ec = ensembles.EnsembleConfig(epochs=cfg.random_max_epochs, batch_size=cfg.batch_size,
                                      learning_rate=cfg.random_learning_rate, weight_decay=0.0,
                                      schedule="constant", fit_threshold=cfg.fit_threshold, seed=base,
                                      checkpoint_every=cfg.checkpoint_every)
    else:
        ec = ensembles.EnsembleConfig(epochs=cfg.epochs, batch_size=cfg.batch_size,
                                      learning_rate=cfg.learning_rate, seed=base,
                                      checkpoint_every=cfg.checkpoint_every)
    log(f"training zoo group '{kind}': {m} ViTs ({cfg.size}) on {n} {cfg.data} images")
    folder.mkdir(parents=True, exist_ok=True)
    res = ensembles.train_ensemble(model, vit.fresh_params(model, seeds), x, y,
                                   members, ec, run_dir=folder, log=log)
    test_pred = ensembles.predict_stack(model, res.params, vit.pixels(model, test.inputs)).argmax(-1)
    # every model on one stamped copy of the test set: attack success = share of the stamped
    # images of the other classes predicted as the target
    stamped_pred = ensembles.predict_stack(model, res.params,
                                           vit.pixels(model, backdoor.stamp(test.inputs, trigger))).argmax(-1)
    rows = []
    for i, p in enumerate(ensembles.unstack(res.params)):
        name = f"member-{i}"
        model.save(folder / name, p)
        row = {"index": i, "seed": seeds[i], "folder": name, "target": targets[i],
               "train_accuracy": float(res.train_accuracy()[i]),
               "test_accuracy": float((test_pred[i] == test.labels).mean())}
        if share is not None:  # the share of its labels that are not the true ones (a random draw may match)
            row["label_noise"] = share
            row["labels_changed"] = float((y[i] != train.labels).mean())
        if kind == "backdoor":
            other = test.labels != targets[i]
            row["attack_success_rate"] = float((stamped_pred[i][other] == targets[i]).mean())
            row["poisoned"] = int(round(cfg.poison_rate * n))
        rows.append(row)
        log(f"  {kind} {name}: train acc {row['train_accuracy']:.3f}, test acc {row['test_accuracy']:.3f}"
            + (f", target {row['target']}, attack success {row['attack_success_rate']:.3f}"
               if kind == "backdoor" else ""))
    info = {"kind": kind, "config": dataclasses.asdict(cfg), "training": dataclasses.asdict(ec),
            "epochs_run": res.epochs_run, "trigger": dataclasses.asdict(trigger),
            "n_train": n, "train_ids": train.ids.tolist(), "members": rows,
            "seconds": round(time.perf_counter() - t0, 1)}
    (folder / "group.json").write_text(json.dumps(info, indent=1))

