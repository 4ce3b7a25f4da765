"""A pretrained decoder LM fine-tuned here as a multi-class sequence classifier, cached.

SmolLM2-135M (the `smollm2` asset: a Llama, 30 blocks, d_model 576) with a fresh `score` head
read at the last real token (`LlamaForSequenceClassification`), fine-tuned on a fixed class
subset of BANKING77 (77 banking intents). It gives the SYNAPSE reference arm a model of
realistic depth and size (claim 5), beside the 6-block MiniLMs and the small ViTs.

Recipe (cheap on CPU, exact): the frozen lower blocks run ONCE over every training, validation
and test input (`Model.prefix`: the residual stream entering block `n_layers − train_blocks`,
kept per input without padding); the top `train_blocks` blocks, the final norm and the score
head then train with Optax AdamW (warmup + cosine; the fresh head at `head_lr`, the pretrained
blocks at `block_lr`) on that cache, early-stopping on validation accuracy. Every step is a
forward and backward of the top blocks only, so an epoch costs about `3 · train_blocks / 30`
of a full forward of the training set; the result is exactly the full model with the lower
blocks unchanged.

Class set, chosen before any result: the first `n_classes` = 10 label ids of BANKING77 (intent
names in sorted order: `Refund_not_showing_up`, `activate_my_card`, `age_limit`,
`apple_pay_or_google_pay`, `atm_support`, `automatic_top_up`, `balance_not_updated_after_bank_transfer`,
`balance_not_updated_after_cheque_or_cash_deposit`, `beneficiary_not_allowed`,
`cancel_transfer`), 1,836 queries, stratified 70/10/20 (1,285 / 184 / 367). Not all 77: the reference arm's curve
sweep runs one selection per class per k level, each a full 30-block forward of every
evaluation input (18 × (C + 3) selections: 234 at 10 classes, 1,440 at 77), which 2 CPU cores
cannot afford; 10 classes keep chance at ~10% and the per-class rankings meaningful.

`fine_tuned(config, work)` returns the saved HF folder and its metrics; the folder name carries
a hash of the config and `metrics.json` (recipe, train / val / test accuracy, steps, seconds) is
written last, so a finished model is loaded, never retrained. Run the fine-tune alone (to cache
it before `make reproduce`): `python scripts/lm_classifier.py [--work runs/reproduce]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import apex_jax
from apex_jax import Model, Prefix
from apex_jax.data import Dataset, encode, padded_width, split_dataset
from . import corpora, minilm


@dataclasses.dataclass(frozen=True)
class LmClassifierConfig:
    """What determines the fine-tuned classifier (its `key()` names the cache folder)."""

    model: str = "smollm2"
    data: str = "banking77"
    n_classes: int = 10  # the first n label ids of the data set (see the module docstring)
    train_blocks: int = 4  # the top blocks trained, with the final norm and the score head
    epochs: int = 10
    patience: int = 3  # epochs without a better validation accuracy before stopping
    batch_size: int = 32
    head_lr: float = 3e-3  # the fresh score head
    block_lr: float = 1e-4  # the pretrained top blocks and final norm
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_length: int = 64
    n_train: int | None = None  # first n of the train split (None: all of it)
    split_seed: int = 0
    seed: int = 0

    @classmethod
    def quick(cls) -> "LmClassifierConfig":
        """A smoke-test size: 96 training queries, one top block, one epoch."""
        return cls(train_blocks=1, epochs=1, n_train=96)

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return f"{self.model}-{self.data}{self.n_classes}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def class_subset(ds: Dataset, n_classes: int) -> Dataset:
    """The rows of `ds` whose label is below `n_classes`, with those label names only."""
    if not 2 <= n_classes <= ds.n_classes:
        raise ValueError(f"n_classes must be in [2, {ds.n_classes}] for {ds.name}; got {n_classes}.")
    if n_classes == ds.n_classes:
        return ds
    rows = np.flatnonzero(ds.labels < n_classes)
    return Dataset(f"{ds.name}-{n_classes}", ds.kind, [ds.inputs[i] for i in rows], ds.labels[rows].astype(np.int32),
                   tuple(ds.label_names[:n_classes]), np.asarray(ds.ids)[rows])


def splits(config: LmClassifierConfig) -> dict[str, Dataset]:
    """The stratified train / val / test splits of the config's class subset (train cut to n_train)."""
    s = split_dataset(class_subset(corpora.load(config.data), config.n_classes), seed=config.split_seed)
    if config.n_train is not None:
        s["train"] = s["train"].subset(range(min(config.n_train, len(s["train"]))))
    return s


def cached_prefix(model: Model, params: Any, data: Dataset, start: int, max_length: int,
                  batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per input, the residual stream entering block `start` at its real tokens: [(hidden
    [len, d_model], attention mask [len])], in data order. Right padding: a decoder's real
    tokens never see the pads, so each input's hidden states equal its unpadded run."""
    run = jax.jit(lambda p, b: model.prefix(p, b, until=f"blocks.{start}.hook_resid_pre").hidden)
    out = []
    for s in range(0, len(data), batch_size):
        enc = encode(model, data.subset(range(s, min(s + batch_size, len(data)))), max_length)
        pad = padded_width(enc["input_ids"].shape[1]) - enc["input_ids"].shape[1]  # few widths: few compiles
        batch = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in enc.items()}
        hidden = np.asarray(run(params, batch))
        lengths = enc["attention_mask"].sum(1)
        out += [(hidden[j, :n], enc["attention_mask"][j, :n]) for j, n in enumerate(lengths)]
    return out


def collate(cache: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, rows: np.ndarray, batch_size: int,
            start: int) -> tuple[Prefix, np.ndarray, np.ndarray]:
    """A fixed-shape batch of cached inputs: (Prefix [batch_size, width, d_model], labels, weights);
    filler rows have weight 0 and attend to one token (no NaNs)."""
    width = padded_width(max(len(cache[i][1]) for i in rows))
    d = cache[rows[0]][0].shape[1]
    hidden = np.zeros((batch_size, width, d), np.float32)
    mask = np.zeros((batch_size, width), np.int32)
    mask[len(rows):, 0] = 1
    lab = np.zeros(batch_size, np.int32)
    w = np.zeros(batch_size, np.float32)
    for j, i in enumerate(rows):
        h, m = cache[i]
        hidden[j, :len(m)], mask[j, :len(m)] = h, m
    lab[:len(rows)], w[:len(rows)] = labels[rows], 1.0
    return Prefix(jnp.asarray(hidden), jnp.asarray(mask), start), lab, w


def trainable_names(model: Model, train_blocks: int) -> tuple[str, ...]:
    """Parameter groups trained: the top `train_blocks` blocks, the final norm, the head."""
    n = model.config.n_layers
    if not 1 <= train_blocks <= n:
        raise ValueError(f"train_blocks must be in [1, {n}]; got {train_blocks}.")
    return (*(f"blocks_{i}" for i in range(n - train_blocks, n)), "ln_final", "head")


def fine_tuned(config: LmClassifierConfig, work: str | Path, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """(HF folder of the fine-tuned classifier, its metrics); trains it first if not cached in `work`."""
    return minilm.cached(Path(work) / "lm_classifier" / config.key(), lambda folder: _fine_tune(config, folder, log))


def _fine_tune(config: LmClassifierConfig, folder: Path, log: Callable[[str], None]) -> dict:
    """Caches the lower blocks, trains the top ones (early stopping), saves `folder`/model; the metrics."""
    t0 = time.perf_counter()
    sp = splits(config)
    model = apex_jax.load(config.model, num_labels=config.n_classes, label_names=sp["train"].label_names,
                          seed=config.seed)
    n_params = int(sum(x.size for x in jax.tree.leaves(model.params)))
    start = model.config.n_layers - config.train_blocks
    names = trainable_names(model, config.train_blocks)
    log(f"[lm] {config.model} ({n_params / 1e6:.1f} M parameters): caching blocks 0–{start - 1} over "
        f"{sum(len(d) for d in sp.values())} {config.data} inputs ({config.n_classes} classes)")
    cache = {k: cached_prefix(model, model.params, d, start, config.max_length) for k, d in sp.items()}
    labels = {k: np.asarray(d.labels, np.int32) for k, d in sp.items()}
    cache_seconds = time.perf_counter() - t0
    log(f"[lm] cached in {cache_seconds:.0f} s; training {', '.join(names[-3:])} and {config.train_blocks - 1} "
        f"more blocks")

    params = jax.tree.map(jnp.asarray, model.params)
    trainable = {k: params[k] for k in names}
    frozen = {k: v for k, v in params.items() if k not in names}
    steps_per_epoch = math.ceil(len(sp["train"]) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total))

    def adamw(lr: float):
        return optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1)),
                           weight_decay=config.weight_decay)

    # the fresh head learns fast; the pretrained blocks move slowly
    tx = optax.multi_transform({"head": adamw(config.head_lr), "blocks": adamw(config.block_lr)},
                               {k: jax.tree.map(lambda _, g="head" if k == "head" else "blocks": g, v)
                                for k, v in trainable.items()})
    opt_state = tx.init(trainable)

    def loss(tr, prefix, lab, w):
        logits = model.apply({**frozen, **tr}, prefix).logits
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab)
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

    @jax.jit
    def step(tr, opt_state, prefix, lab, w):
        value, grads = jax.value_and_grad(loss)(tr, prefix, lab, w)
        updates, opt_state = tx.update(grads, opt_state, tr)
        return optax.apply_updates(tr, updates), opt_state, value

    logits_of = jax.jit(lambda tr, prefix: model.apply({**frozen, **tr}, prefix).logits)

    def accuracy(tr, split: str) -> float:
        n = len(cache[split])
        right = 0
        for s in range(0, n, 64):
            rows = np.arange(s, min(n, s + 64))
            prefix, lab, _ = collate(cache[split], labels[split], rows, 64, start)
            right += int((np.asarray(logits_of(tr, prefix))[:len(rows)].argmax(1) == lab[:len(rows)]).sum())
        return right / n

    rng = np.random.default_rng(config.seed)
    best, best_acc, history, steps, since = trainable, -1.0, [], 0, 0
    for epoch in range(config.epochs):
        te = time.perf_counter()
        order = rng.permutation(len(cache["train"]))
        losses = []
        for s in range(0, len(order), config.batch_size):
            prefix, lab, w = collate(cache["train"], labels["train"], order[s:s + config.batch_size],
                                     config.batch_size, start)
            trainable, opt_state, value = step(trainable, opt_state, prefix, lab, w)
            losses.append(float(value))
            steps += 1
        if not np.all(np.isfinite(losses)):
            raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}; lower the learning rates.")
        val = accuracy(trainable, "val")
        history.append({"epoch": epoch + 1, "train_loss": round(float(np.mean(losses)), 4), "val_accuracy": round(val, 4),
                        "seconds": round(time.perf_counter() - te, 1)})
        log(f"[lm] epoch {epoch + 1}: loss {np.mean(losses):.4f}, val accuracy {val:.4f} "
            f"({history[-1]['seconds']} s)")
        if val > best_acc:
            best, best_acc, since = trainable, val, 0
        else:
            since += 1
            if since >= config.patience:
                break
    final = {**frozen, **best}
    metrics = {"config": dataclasses.asdict(config), "model": config.model, "n_parameters": n_params,
               "n_layers": model.config.n_layers, "d_model": model.config.d_model,
               "label_names": list(sp["train"].label_names),
               "trained": list(names), "n_train": len(sp["train"]), "n_val": len(sp["val"]), "n_test": len(sp["test"]),
               "train_accuracy": round(accuracy(best, "train"), 4), "best_val_accuracy": round(best_acc, 4),
               "test_accuracy": round(accuracy(best, "test"), 4), "chance": round(float(
                   np.bincount(labels["test"]).max() / len(labels["test"])), 4),
               "epochs_run": len(history), "steps": steps, "history": history,
               "cache_seconds": round(cache_seconds, 1), "seconds": round(time.perf_counter() - t0, 1)}
    model.save(folder / "model", params=jax.tree.map(np.asarray, final))
    log(f"[lm] fine-tuned: test accuracy {metrics['test_accuracy']:.4f} (chance {metrics['chance']:.4f}), "
        f"{metrics['seconds']} s")
    return metrics


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python scripts/lm_classifier.py",
                                description="Fine-tune (and cache) SmolLM2 as a BANKING77 classifier for claim 5.")
    p.add_argument("--work", default="runs/reproduce", help="where the fine-tuned model is cached")
    p.add_argument("--quick", action="store_true", help="the smoke-test size")
    a = p.parse_args(argv)
    cfg = LmClassifierConfig.quick() if a.quick else LmClassifierConfig()
    folder, metrics = fine_tuned(cfg, a.work, lambda s: print(s, flush=True))
    print(folder)
    return metrics


def describe(metrics: dict) -> str:
    """The model in one line for the report: name, size, depth, classes, recipe."""
    cfg = metrics["config"]
    return (f"{cfg['model']} ({metrics['n_parameters'] / 1e6:.0f}M parameters, {metrics['n_layers']} blocks) "
            f"fine-tuned on {cfg['n_classes']} {cfg['data']} classes ({metrics['n_train']} inputs; top "
            f"{cfg['train_blocks']} blocks + final norm + score head, {metrics['epochs_run']} epochs; test accuracy "
            f"{metrics['test_accuracy']:.3f}, chance {metrics['chance']:.3f})")
