"""Training many small models at once: one jitted Optax step vmapped over a stacked model axis.

`train_ensemble` trains M models of one architecture together. Their parameters are stacked on
a leading axis (`stack`), each model has its own training examples (`members`: M rows of
indices into the shared pool, all of one length), its own labels (`labels` [M, N]) and,
optionally, its own inputs (`inputs` [M, N, ...], e.g. backdoor-stamped copies; [N, ...] is
shared). The epoch's batches are gathered on the host ([steps, M, batch, ...]); one epoch is
one `lax.scan` over steps inside one jitted call (compiled once per architecture and shape);
each step takes a vmapped Adam(W) step and records, for every example in every model's
batch, whether the model predicted it correctly *before* the update (training-time accuracy,
the learning-speed proxy of Jiang et al. 2021: the mean over the training run of that
correctness). After training every model predicts every pool example, so the examples a
model did not train on give hold-out correctness (the C-score estimate: mean accuracy on an
example of the models that did not train on it).

Epochs take `len(members[m]) // batch_size` steps (the remainder, different each epoch because
batches come from a fresh permutation, waits for the next epoch). With `run_dir`, the state is
checkpointed in RUN_DIR/ensemble-checkpoints (`apex_jax.Checkpoints`, orbax; every
`checkpoint_every` epochs and at the end) and a rerun resumes
from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from apex_jax import Checkpoints
from apex_jax.models import ArchConfig, Model, skeleton


def stack(trees: list[Any]) -> Any:
    """Stacks parameter trees of one architecture on a new leading axis."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def unstack(tree: Any) -> list[Any]:
    """The inverse of `stack`: a list of M parameter trees (numpy)."""
    tree = jax.device_get(tree)
    m = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x: np.asarray(x[i]), tree) for i in range(m)]


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Settings of `train_ensemble`.

    `schedule`: "cosine" (linear warmup, then cosine decay to 0 over `epochs`) or "constant"
    (warmup, then constant: for training until the training set is fitted).
    `fit_threshold`: if set, stop after the first epoch in which every model's training-time
    accuracy on its own examples is >= this (checked from epoch `min_epochs` on).
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    fit_threshold: float | None = None
    min_epochs: int = 1
    seed: int = 0
    eval_batch: int = 256
    checkpoint_every: int = 1  # epochs between orbax checkpoints (the last epoch is always saved)


@dataclasses.dataclass
class EnsembleResult:
    params: Any  # stacked [M, ...]
    train_hits: np.ndarray  # [M, N] int: correct predictions of the example in training batches
    train_seen: np.ndarray  # [M, N] int: times the example was in a training batch
    final_correct: np.ndarray  # [M, N] bool: correct at the end (each model's own labels)
    in_train: np.ndarray  # [M, N] bool: the model trained on the example
    epoch_train_accuracy: np.ndarray  # [epochs run, M]: training-time accuracy per epoch
    epochs_run: int
    seconds: float

    def learning_speed(self) -> np.ndarray:
        """Per example: mean training-time accuracy over all models that trained on it and all
        epochs ([N]; NaN where no model did)."""
        seen = self.train_seen.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(seen > 0, self.train_hits.sum(0) / np.maximum(seen, 1), np.nan)

    def holdout_accuracy(self) -> np.ndarray:
        """Per example: share of the models that did *not* train on it that classify it
        correctly at the end (the C-score estimate; [N], NaN where every model trained on it)."""
        out = ~self.in_train
        n = out.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (self.final_correct & out).sum(0) / np.maximum(n, 1), np.nan)

    def train_accuracy(self) -> np.ndarray:
        """Per model: final accuracy on its own training examples (its own labels) [M]."""
        return (self.final_correct & self.in_train).sum(1) / self.in_train.sum(1)


def random_members(n: int, m: int, size: int, seed: int) -> np.ndarray:
    """M independent random subsets of `size` of range(n) (each sorted) [M, size]."""
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(n, size, replace=False)) for _ in range(m)])


def _schedule(cfg: EnsembleConfig, total: int):
    warmup = max(1, int(cfg.warmup_fraction * total))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total, warmup + 1))
    if cfg.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup),
                                     optax.constant_schedule(cfg.learning_rate)], [warmup])
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use 'cosine' or 'constant'.")


def predict_stack(model: Model, params: Any, pixel_values: np.ndarray, batch: int = 256,
                  per_model_inputs: bool = False) -> np.ndarray:
    """Logits of every stacked model on every input: [M, N, C]. `pixel_values` is [N, ...]
    (shared) or [M, N, ...] with `per_model_inputs`."""
    n = pixel_values.shape[1 if per_model_inputs else 0]
    batch = min(batch, n)
    outs = []
    for s in range(0, n, batch):
        x = pixel_values[:, s:s + batch] if per_model_inputs else pixel_values[s:s + batch]
        k = x.shape[1 if per_model_inputs else 0]
        if k < batch:  # pad the last chunk: one compiled shape
            pad = [(0, 0)] * x.ndim
            pad[1 if per_model_inputs else 0] = (0, batch - k)
            x = np.pad(x, pad)
        outs.append(np.asarray(_predict(params, x, config=model.config, per_model=per_model_inputs))[:, :k])
    return np.concatenate(outs, axis=1)


def _logits(config: ArchConfig, params: Any, pixel_values: jax.Array) -> jax.Array:
    """One model's logits [N, C] (traced: the architecture's parameter-free Model is only the
    function)."""
    return skeleton(config).apply(params, {"pixel_values": pixel_values}).logits


@functools.partial(jax.jit, static_argnames=("config", "per_model"))
def _predict(params: Any, pixel_values: jax.Array, *, config: ArchConfig, per_model: bool) -> jax.Array:
    """Every stacked model's logits [M, N, C]; compiled once per (architecture, input sharing,
    shapes) by jit's own cache."""
    one = lambda p, x: _logits(config, p, x)
    return jax.vmap(one, in_axes=(0, 0 if per_model else None))(params, pixel_values)


def train_ensemble(
    model: Model,
    params: Any,
    pixel_values: np.ndarray,
    labels: np.ndarray,
    members: np.ndarray,
    config: EnsembleConfig = EnsembleConfig(),
    run_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> EnsembleResult:
    """Trains M image classifiers of `model`'s architecture at once (see the module docstring).

    Args:
        model: the architecture (its own params are not used).
        params: stacked initial parameters [M, ...] (`stack` of fresh models' params).
        pixel_values: encoded images (`model.encode`), [N, C, H, W] shared by all models or
            [M, N, C, H, W] one copy per model.
        labels: [N] shared or [M, N] per model.
        members: [M, S] indices into the N examples: what each model trains on.
        config: EnsembleConfig.
        run_dir: orbax checkpoints of the training state after every epoch (resumable).

    Returns:
        EnsembleResult (parameters, per-example training-time and final correctness).
    """
    m = jax.tree.leaves(params)[0].shape[0]
    per_model_x = pixel_values.ndim == 5
    n = pixel_values.shape[1] if per_model_x else pixel_values.shape[0]
    labels = np.broadcast_to(np.asarray(labels, np.int32), (m, n)).copy()
    members = np.asarray(members, np.int32)
    if members.ndim != 2 or members.shape[0] != m:
        raise ValueError(f"members must be [M={m}, S]; got shape {members.shape}.")
    if per_model_x and pixel_values.shape[0] != m:
        raise ValueError(f"per-model inputs have {pixel_values.shape[0]} copies for {m} models.")
    bs = config.batch_size
    steps = members.shape[1] // bs
    if steps < 1:
        raise ValueError(f"each model trains on {members.shape[1]} examples, fewer than one batch of {bs}.")
    schedule = _schedule(config, steps * config.epochs)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = jax.vmap(_TX.init)(params)
    opt_state.hyperparams["weight_decay"] = jnp.full((m,), config.weight_decay, jnp.float32)
    hits = np.zeros((m, n), np.int32)
    seen = np.zeros((m, n), np.int32)
    epoch_acc: list[np.ndarray] = []
    start = 0
    ckpt = Checkpoints(Path(run_dir) / "ensemble-checkpoints") if run_dir is not None else None
    latest = ckpt.latest_step() if ckpt is not None else None
    if latest is not None:
        state = ckpt.restore(like={"params": params, "opt": opt_state, "hits": hits, "seen": seen,
                                   "epoch_acc": np.zeros((latest + 1, m), np.float32)})[0]
        params, opt_state = state["params"], state["opt"]
        hits, seen = np.asarray(state["hits"]), np.asarray(state["seen"])
        epoch_acc = list(np.asarray(state["epoch_acc"]))
        start = latest + 1
        log(f"resumed ensemble training after epoch {start}")
    t0 = time.perf_counter()
    done = start
    for epoch in range(start, config.epochs):
        if config.fit_threshold is not None and epoch_acc and epoch >= config.min_epochs \
                and np.min(epoch_acc[-1]) >= config.fit_threshold:
            break
        rng = np.random.default_rng([config.seed, epoch])
        order = np.stack([members[i, rng.permutation(members.shape[1])[: steps * bs]] for i in range(m)])
        batches = order.reshape(m, steps, bs).transpose(1, 0, 2)  # [steps, M, B]
        te = time.perf_counter()
        # batches are gathered on the host: one compiled epoch for shared and per-model inputs
        rows_m = np.arange(m)[None, :, None]
        xb = pixel_values[rows_m, batches] if per_model_x else pixel_values[batches]
        yb = labels[rows_m, batches]
        lrs = jnp.asarray(schedule(np.arange(epoch * steps, (epoch + 1) * steps)), jnp.float32)
        params, opt_state, correct = _epoch(params, opt_state, xb, yb, lrs, config=model.config)
        correct = np.asarray(correct).transpose(1, 0, 2).reshape(m, steps * bs)  # [M, steps*B]
        rows = np.repeat(np.arange(m), steps * bs)
        np.add.at(hits, (rows, order.ravel()), correct.ravel())
        np.add.at(seen, (rows, order.ravel()), 1)
        epoch_acc.append(correct.mean(1).astype(np.float32))
        done = epoch + 1
        log(f"epoch {epoch + 1}/{config.epochs}: training-time accuracy "
            f"{np.min(epoch_acc[-1]):.3f}..{np.max(epoch_acc[-1]):.3f} over {m} models "
            f"({time.perf_counter() - te:.1f} s)")
        last = epoch + 1 == config.epochs or (config.fit_threshold is not None and epoch + 1 >= config.min_epochs
                                               and np.min(epoch_acc[-1]) >= config.fit_threshold)
        if ckpt is not None and (last or (epoch + 1) % config.checkpoint_every == 0):
            ckpt.save(epoch, {"params": params, "opt": opt_state, "hits": hits, "seen": seen,
                              "epoch_acc": np.stack(epoch_acc)})
    logits = predict_stack(model, params, pixel_values, config.eval_batch, per_model_x)
    final_correct = logits.argmax(-1) == labels
    in_train = np.zeros((m, n), bool)
    in_train[np.repeat(np.arange(m), members.shape[1]), members.ravel()] = True
    return EnsembleResult(jax.device_get(params), hits, seen, final_correct, in_train,
                          np.stack(epoch_acc) if epoch_acc else np.zeros((0, m)), done,
                          time.perf_counter() - t0)


# Adam(W) with the learning rate and weight decay held in the optimizer state
# (optax.inject_hyperparams): the learning rate of every step is computed on the host and fed in,
# so one compiled epoch serves every schedule and run length of the same shapes.
_TX = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)


def _loss(config: ArchConfig, p: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of one model on one batch, and its logits."""
    logits = _logits(config, p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def _one_model_step(config: ArchConfig, p: Any, o: Any, x: jax.Array, y: jax.Array, lr: jax.Array):
    """One Adam(W) step of one model: (params, opt_state, correct-before-the-step [B])."""
    (_, logits), g = jax.value_and_grad(functools.partial(_loss, config), has_aux=True)(p, x, y)
    o.hyperparams["learning_rate"] = lr
    upd, o = _TX.update(g, o, p)
    return optax.apply_updates(p, upd), o, jnp.argmax(logits, -1) == y


@functools.partial(jax.jit, static_argnames="config", donate_argnums=(0, 1))
def _epoch(params: Any, opt_state: Any, xb: jax.Array, yb: jax.Array, lrs: jax.Array, *, config: ArchConfig):
    """One epoch: `lax.scan` over steps of a step vmapped over models. xb [steps, M, B, ...],
    yb [steps, M, B], lrs [steps]; returns (params, opt_state, correct [steps, M, B]).
    Compiled once per architecture and shapes (jit's cache; the learning rates are data)."""
    step = jax.vmap(functools.partial(_one_model_step, config), in_axes=(0, 0, 0, 0, None))

    def body(carry, a):
        p, o = carry
        p, o, c = step(p, o, *a)
        return (p, o), c

    (params, opt_state), correct = jax.lax.scan(body, (params, opt_state), (xb, yb, lrs))
    return params, opt_state, correct
