"""Training classifiers with Optax: fine-tuning (head-only or full) and training from scratch.

The loop is a jitted `train_step` over fixed-shape batches: text batches are padded to a small
set of bucket lengths (multiples of 16) and the last batch of an epoch is filled with zero-
weight rows, so an epoch compiles at most one step per bucket. Batches are formed from
length-sorted windows of a shuffled epoch (less padding) and then shuffled.

Early stopping keeps the parameters with the best validation accuracy. With `out_dir`, the
training state (params, optimizer state, best params, history) is checkpointed with orbax after
every epoch; running again with the same `out_dir` resumes from the last completed epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from apex_jax import batching, inputs, runs
from apex_jax import data as data_lib
from apex_jax.checkpoints import Checkpoints
from apex_jax.data import Dataset
from apex_jax.errors import InputError
from apex_jax.models import create, load
from apex_jax.models.model import Model
from apex_jax.models.presets import VIT_PRESETS, vit_hf_config
from apex_jax.progress import Progress, tracker
from apex_jax.settings import FinetuneSettings


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of `train`. `learning_rate=None` picks 5e-5 (full fine-tuning), 1e-3 (head only,
    or a model trained from scratch: `from_scratch=True`)."""

    mode: str = "full"  # "full": all parameters; "head": only the classification head
    learning_rate: float | None = None
    weight_decay: float = 0.01
    batch_size: int = 32
    max_epochs: int = 3
    patience: int = 1  # epochs without a better validation accuracy before stopping
    warmup_fraction: float = 0.06
    max_length: int = 64  # text: longer inputs are truncated
    seed: int = 0
    from_scratch: bool = False

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if (self.mode == "head" or self.from_scratch) else 5e-5


class Batch(NamedTuple):
    inputs: dict  # model inputs, [batch, ...]
    labels: np.ndarray  # [batch] int32
    weights: np.ndarray  # [batch] float32, 0 for filler rows


def featurize(model: Model, data: Dataset, max_length: int = 64) -> list[dict[str, np.ndarray]]:
    """Per-example model inputs without padding (text: token ids; images: pixel_values)."""
    enc = batching.encode(model, data, max_length)
    if data.kind == "text":
        lengths = enc["attention_mask"].sum(1)
        return [{k: v[i, : lengths[i]] for k, v in enc.items()} for i in range(len(data))]
    return [{"pixel_values": p} for p in enc["pixel_values"]]


def make_batches(
    features: list[dict[str, np.ndarray]], labels: np.ndarray, batch_size: int,
    rng: np.random.Generator | None = None,
) -> list[Batch]:
    """Fixed-shape batches; shuffled and length-bucketed if `rng` is given, else in order."""
    n = len(features)
    order = np.arange(n)
    is_text = "input_ids" in features[0]
    if rng is not None:
        order = rng.permutation(n)
        if is_text:  # sort windows of 50 batches by length: far less padding, still random
            window = batch_size * 50
            lengths = np.array([len(features[i]["input_ids"]) for i in order])
            for s in range(0, n, window):
                part = order[s : s + window]
                order[s : s + window] = part[np.argsort(lengths[s : s + window], kind="stable")]
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [_collate([features[i] for i in idx], labels[idx], batch_size) for idx in batches]


def _collate(items: list[dict], labels: np.ndarray, batch_size: int) -> Batch:
    k = len(items)
    weights = np.zeros(batch_size, np.float32)
    weights[:k] = 1.0
    lab = np.zeros(batch_size, np.int32)
    lab[:k] = labels
    if "input_ids" in items[0]:
        longest = max(len(it["input_ids"]) for it in items)
        length = batching.padded_width(longest)
        out = {key: np.zeros((batch_size, length), np.int32) for key in items[0]}
        for j, it in enumerate(items):
            for key, v in it.items():
                out[key][j, : len(v)] = v
        if "input_ids" in out and "attention_mask" in out:
            out["attention_mask"][k:, 0] = 1  # filler rows attend to one token: no NaNs
        return Batch(out, lab, weights)
    pix = np.zeros((batch_size,) + items[0]["pixel_values"].shape, np.float32)
    pix[:k] = np.stack([it["pixel_values"] for it in items])
    return Batch({"pixel_values": pix}, lab, weights)


def _split_trainable(params: dict, mode: str) -> tuple[dict, dict]:
    if mode == "full":
        return params, {}
    if mode == "head":
        if "head" not in params:
            raise ValueError("mode='head' needs a model with a classification head (load it with num_labels=...).")
        return {"head": params["head"]}, {k: v for k, v in params.items() if k != "head"}
    raise ValueError(f"unknown training mode {mode!r}; choose 'full' or 'head'.")


def _loss_fn(model: Model):
    def loss(trainable, frozen, batch: Batch):
        logits = model.apply({**frozen, **trainable}, batch.inputs).logits
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
        w = batch.weights
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0), logits
    return loss


def predict_logits(model: Model, params: Any, data: Dataset, batch_size: int = 64,
                   max_length: int = 64, progress: Progress = None, desc: str = "predicting") -> np.ndarray:
    """Clean logits [n, n_classes] for a data set, in order (`progress`: see apex_jax.progress)."""
    step = model.jitted()
    feats = featurize(model, data, max_length)
    out = []
    with tracker(len(data), desc, "inputs", progress) as bar:
        for b in make_batches(feats, data.labels, batch_size):
            k = int(b.weights.sum())
            out.append(np.asarray(step(params, b.inputs).logits)[:k])
            bar.update(k)
    return np.concatenate(out)


def evaluate(model: Model, params: Any, data: Dataset, batch_size: int = 64,
             max_length: int = 64, progress: Progress = None, desc: str = "evaluating") -> dict[str, float]:
    """Accuracy and mean cross-entropy on a data set."""
    logits = predict_logits(model, params, data, batch_size, max_length, progress, desc)
    logp = np.asarray(jax.nn.log_softmax(logits, axis=1))
    return {
        "accuracy": float((logits.argmax(1) == data.labels).mean()),
        "loss": float(-logp[np.arange(len(data)), data.labels].mean()),
    }


def train(
    model: Model,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig = TrainConfig(),
    out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: Progress = None,
) -> tuple[Model, dict]:
    """Trains `model`'s classifier on `train_data`, early-stopping on `val_data`.

    `progress` reports the steps of every epoch and the validation pass with rate and ETA
    (`apex_jax.progress`: None = a bar on a terminal only, True = bar or log lines, False =
    silent, or a callable).

    Returns:
        (the model with the best validation parameters, history dict).
    """
    if model.config.n_classes is None:
        raise ValueError("the model has no classification head; load it with num_labels=N.")
    bad = [n for n, d in (("train", train_data), ("val", val_data)) if d.n_classes > model.config.n_classes]
    if bad:
        raise ValueError(
            f"{bad} data have {train_data.n_classes} classes but the model's head has "
            f"{model.config.n_classes}."
        )
    trainable, frozen = _split_trainable(jax.tree.map(jnp.asarray, model.params), config.mode)
    train_feats = featurize(model, train_data, config.max_length)
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
    total = steps_per_epoch * config.max_epochs
    warmup = max(1, int(config.warmup_fraction * total))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr(), warmup, max(total, warmup + 1))
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = tx.init(trainable)
    loss = _loss_fn(model)

    @jax.jit
    def train_step(trainable, opt_state, frozen, batch):
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(trainable, frozen, batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, value

    history = {"epochs": [], "config": dataclasses.asdict(config)}
    best = {"val_accuracy": -1.0, "trainable": trainable, "epoch": -1}
    ckpt = _Checkpoints(out_dir) if out_dir is not None else None
    first_epoch = 0
    if ckpt is not None and ckpt.latest() is not None:
        trainable, opt_state, best_trainable, meta = ckpt.restore(trainable, opt_state)
        history, first_epoch = meta["history"], meta["epoch"] + 1
        best = {"val_accuracy": meta["best_val_accuracy"], "trainable": best_trainable, "epoch": meta["best_epoch"]}
        log(f"resumed from epoch {meta['epoch'] + 1} (best val acc {best['val_accuracy']:.4f})")
    bad_epochs = _bad_epochs(history, best["epoch"])
    for epoch in range(first_epoch, config.max_epochs):
        if bad_epochs >= config.patience:
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        losses = []
        with tracker(steps_per_epoch, f"fine-tuning, epoch {epoch + 1}/{config.max_epochs}", "steps",
                     progress) as bar:
            for batch in make_batches(train_feats, train_data.labels, config.batch_size, rng):
                trainable, opt_state, value = train_step(trainable, opt_state, frozen, batch)
                losses.append(value)
                if not np.isfinite(float(value)):  # (also waits for the step: the bar counts finished steps)
                    raise InputError(
                        f"training diverged: the loss is {float(value)} at epoch {epoch + 1}, step {len(losses)} "
                        f"(learning rate {config.lr():g}); nothing was saved. Lower --lr, or check the data")
                bar.update()
        params = {**frozen, **trainable}
        val = evaluate(model, params, val_data, max_length=config.max_length, progress=progress,
                       desc="validation")
        record = {"epoch": epoch, "train_loss": float(np.mean(jax.device_get(losses))),
                  "val_accuracy": val["accuracy"], "val_loss": val["loss"],
                  "seconds": round(time.perf_counter() - t0, 1)}
        history["epochs"].append(record)
        log(f"epoch {epoch + 1}/{config.max_epochs}: train loss {record['train_loss']:.4f}, "
            f"val acc {val['accuracy']:.4f} ({record['seconds']} s)")
        if val["accuracy"] > best["val_accuracy"]:
            best = {"val_accuracy": val["accuracy"], "trainable": trainable, "epoch": epoch}
        bad_epochs = _bad_epochs(history, best["epoch"])
        if ckpt is not None:
            ckpt.save(epoch, trainable, opt_state, best["trainable"], {
                "epoch": epoch, "history": history, "best_val_accuracy": best["val_accuracy"],
                "best_epoch": best["epoch"],
            })
    history["best_epoch"] = best["epoch"]
    history["best_val_accuracy"] = best["val_accuracy"]
    best_params = jax.device_get({**frozen, **best["trainable"]})
    return model.replace(best_params), history


def _bad_epochs(history: dict, best_epoch: int) -> int:
    return sum(1 for r in history["epochs"] if r["epoch"] > best_epoch)


class _Checkpoints:
    """The training state of every completed epoch (latest kept), via `apex_jax.checkpoints`."""

    def __init__(self, out_dir: str | Path):
        self.store = Checkpoints(Path(out_dir) / "checkpoints")

    def latest(self):
        return self.store.latest_step()

    def save(self, epoch, trainable, opt_state, best_trainable, meta):
        state = {"trainable": trainable, "opt_state": opt_state, "best": best_trainable}
        self.store.save(epoch, state, meta)

    def restore(self, trainable, opt_state):
        s, meta = self.store.restore({"trainable": trainable, "opt_state": opt_state, "best": trainable})
        return s["trainable"], s["opt_state"], s["best"], meta


def _initial_model(model: Model | str, data: Dataset, seed: int) -> Model:
    """The model to train: a ViT preset created fresh and sized to the images, a pretrained
    model given by name with a new head of the data's classes, or a `Model` as given."""
    if isinstance(model, Model):
        return model
    if model in VIT_PRESETS:
        if data.kind != "image":
            raise InputError(f"{model} is an image model; {data.name} is a text data set: give an image data set "
                             "(mnist5k, digits, an .npz file) or a text model")
        _, c, h, _w = data.inputs.shape
        return create(vit_hf_config(model, c, h), num_labels=data.n_classes, label_names=data.label_names, seed=seed)
    return load(str(model), num_labels=data.n_classes, label_names=data.label_names, seed=seed)


HELD_OUT_FLOOR = 256  # with --n-train, val and test default to at most max(HELD_OUT_FLOOR, n_train) examples


def held_out(part: Dataset, n: int | None, n_train: int | None, flag: str) -> Dataset:
    """The first examples of a val or test split that fine-tuning reads.

    `n` as asked (more than the split has is refused); unset, the whole split, or, for a run
    on `n_train` examples, at most max(`HELD_OUT_FLOOR`, n_train) of it: a 32-example run
    should not validate on a thousand sentences every epoch. Splits are class-interleaved, so
    a prefix stays close to stratified.
    """
    if n is None:
        if n_train is None:
            return part
        n = min(len(part), max(HELD_OUT_FLOOR, n_train))
    elif n > len(part):
        raise InputError(f"{flag} {n}, but that split has {len(part)} examples; choose 1 <= n <= {len(part)}, or "
                         "leave it unset")
    return part if n == len(part) else part.subset(np.arange(n))


def unseen_part(part: Dataset, train_part: Dataset) -> tuple[Dataset, int]:
    """`part` without the texts that also occur in `train_part`, and how many were left out.

    Data sets repeat sentences (VADER's NYT set 62 times): a held-out copy of a training text
    would be scored as unseen. Leaving such copies out of val and test, rather than deduplicating
    before the split, keeps the documented split rule (`apex_jax.data.split_dataset`) that every
    command's split follows, so APEX and SYNAPSE read the same test inputs as before.
    """
    if part.kind != "text":
        return part, 0
    seen = set(map(str, train_part.inputs))
    keep = np.array([str(t) not in seen for t in part.inputs])
    if not keep.any():
        raise InputError(f"every one of the {len(part)} held-out examples of {part.name!r} repeats a training text, so "
                         "none is unseen: use data with fewer repeated texts, or --keep-duplicates to score them")
    return (part if keep.all() else part.subset(np.flatnonzero(keep))), int((~keep).sum())


def _check_training_classes(full: Dataset, train_part: Dataset, splits: dict, log: Callable[[str], None] | None) -> None:
    """Refuses training data of one class; notes classes with no training example and test
    inputs that also occur in the training part (they inflate the held-out accuracy)."""
    present = np.unique(train_part.labels)
    if len(present) < 2:
        raise InputError(f"the training part of {full.name!r} ({len(train_part)} examples) holds only class "
                         f"{int(present[0])} ({full.label_names[int(present[0])]}); a classifier needs examples of "
                         "at least two classes: use more examples (a larger --n-train) or other data")
    absent = [c for c in range(full.n_classes) if c not in set(present.tolist())]
    if absent and log:
        log(f"note: classes {absent} ({', '.join(full.label_names[c] for c in absent)}) have no training example; "
            "the model cannot learn to predict them")
    if full.kind == "text" and log:
        seen = set(map(str, train_part.inputs))
        repeated = sum(str(t) in seen for t in splits["test"].inputs)
        if repeated:
            log(f"note: {repeated} of the {len(splits['test'])} test inputs also occur in the training part "
                "(duplicate texts in the data, kept by --keep-duplicates): the held-out accuracy counts them as unseen")


def finetune_run(model: Model | str, data: Dataset | str, out: str | Path, settings: FinetuneSettings | None = None,
                 *, overwrite: bool = False, progress: Progress = True, log: Callable[[str], None] | None = print,
                 **options: Any) -> dict:
    """Fine-tunes (or trains) a classifier on the train split of `data` with early stopping on
    val, scores it on test, and writes the run folder: OUT/model (HF folder), OUT/checkpoints
    (resume), OUT/summary.json, OUT/timing.json, OUT/index.html. The same run as
    `apex-jax finetune`; the head is created with the data set's classes, so model and data
    share one label space.

    Args:
        model: a pretrained model name or HF folder (a new head is added), a ViT preset
            (trained from scratch), or an `apex_jax.Model` with a head of the data's classes.
        data: a data set name or file, or a `Dataset`; it is split into train/val/test by
            `settings.split_seed`. `settings.n_train`, `n_val` and `n_test` take the first
            examples of each part; with `n_train` set and `n_val` / `n_test` unset, val and
            test hold at most max(256, n_train) examples (`held_out`). The sizes used are
            recorded in run.json's settings and the summary.
        out: the run folder.
        settings: the run's `FinetuneSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`; `log` also gets a line per epoch.

    Returns:
        summary.json's content plus "timing".
    """
    s = FinetuneSettings.of(settings, **options)
    out = runs.check_out(out)
    full = data_lib.load_dataset(data) if not isinstance(data, Dataset) else data
    splits = data_lib.split_dataset(full, seed=s.split_seed)
    train_part = splits["train"]
    if s.n_train is not None:
        if s.n_train > len(train_part):
            raise InputError(f"--n-train {s.n_train}, but the train split of {full.name!r} has {len(train_part)} "
                             f"examples; choose 1 <= n <= {len(train_part)}, or leave it unset")
        train_part = train_part.subset(range(s.n_train))
    val_part = held_out(splits["val"], s.n_val, s.n_train, "--n-val")
    test_part = held_out(splits["test"], s.n_test, s.n_train, "--n-test")
    duplicates = {}
    if not s.keep_duplicates:
        val_part, duplicates["val"] = unseen_part(val_part, train_part)
        test_part, duplicates["test"] = unseen_part(test_part, train_part)
        if any(duplicates.values()) and log:
            log(f"note: left out {duplicates['val']} val and {duplicates['test']} test examples whose text also "
                "occurs in the training part (--keep-duplicates keeps them)")
    splits = {"train": train_part, "val": val_part, "test": test_part}
    _check_training_classes(full, train_part, splits, log)
    from_scratch = isinstance(model, str) and model in VIT_PRESETS
    initial = _initial_model(model, full, s.seed)
    if not from_scratch:
        data_lib.check_input_kind(full, "text" if initial.config.is_text else "image", inputs.name_of(model, "the model"))
    config = TrainConfig(mode=s.mode, learning_rate=s.lr, batch_size=s.batch_size, max_epochs=s.epochs,
                         patience=s.patience, max_length=s.max_length, seed=s.seed, from_scratch=from_scratch)
    run = runs.open_run(out, s.command, {**inputs.identity(model, initial, data, full), **s.record(),
                                         "n_val": len(val_part), "n_test": len(test_part)},
                        overwrite=overwrite, log=log, inputs=(model, data))
    with run:
        t0 = time.perf_counter()
        if log:
            log(f"{initial}\ntraining on {len(train_part)} {full.name} examples ({config.mode}), "
                f"validating on {len(splits['val'])}")
        run.claim("checkpoints")  # the training state, for resuming
        trained, history = train(initial, train_part, splits["val"], config, out_dir=out, log=log or print,
                                 progress=progress)
        test = evaluate(trained, trained.params, splits["test"], max_length=config.max_length, progress=progress,
                        desc="test")
        trained.save(run.path("model"))
        # seconds go to timing.json: summary.json is the same bytes for the same run
        epoch_seconds = [r.pop("seconds", None) for r in history["epochs"]]
        results = {"n_train": len(train_part), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
                   "held_out_duplicates_left_out": duplicates or None,
                   "test_accuracy": test["accuracy"], "test_loss": test["loss"], "history": history}
        summary = run.write_summary(results, details={"train": dataclasses.asdict(config)})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 1), "epoch_seconds": epoch_seconds})
        run.complete(log)
        return {**summary, "timing": timing}
