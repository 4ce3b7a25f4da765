"""SYNAPSE step 1b: linear probes on [CLS] features (`features.extract_cls`).

    feats = extract_cls(model, model.params, model.encode(texts))      # {site: [n, d_model]}
    train_idx, test_idx = stratified_split(labels, test_fraction=0.2, seed=0)   # apex_jax.data
    probes = train_probes(feats, labels, train_idx, test_idx)          # every layer at once
    probes.metrics("blocks.3.hook_resid_post").accuracy
    probes[CONCAT].W                                                    # [C, L * d_model]

Probes. Multinomial logistic regression with an elastic-net penalty on standardized features:

    loss(W, b) = mean_i CE(W x_i + b, y_i) + l1 · Σ|W| + l2 · Σ W²     (b is not penalized)

The reference recipe (`ProbeConfig.neurox()`, SYNAPSE's NeuroX fork): raw features, the penalty
l1 · Σ|W| + l2 · ‖W‖_F (the Frobenius norm, not its square) added to every minibatch's mean
cross-entropy, Adam at a constant 1e-3, 10 epochs of minibatches of 32 taken in data order (no
shuffling), W and b initialized like `torch.nn.Linear` (uniform ±1/√d).

Standardization uses the train split's mean and std, so W is in standardized units and |W[c, j]|
compares neurons fairly (MiniLM's [CLS] spreads ~1e-3 in early layers; unstandardized probes
there stay at chance). All probes of one width are trained together: features are stacked on a
layer axis [L, n, d] and one Adam run (full batch, `lax.scan` over steps) is `jax.vmap`-ed over
it. The probe on all layers concatenated ([n, L · d]) is one more probe, named `CONCAT`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from apex_jax.checkpoints import Checkpoints
from apex_jax.engine.reprs import compact_repr, names
from apex_jax.errors import CheckpointError
from apex_jax.progress import Progress, Tracker, tracker
from apex_jax.tables import frame_from_dicts

Array = Any

CHUNK_STEPS = 50  # optimizer steps per compiled call: progress is reported between calls
RECIPES = ("full-batch", "minibatch")
CONCAT = "concat"  # name of the probe on all layers' features concatenated (in site order)
FORMAT = "apex_jax.probes/2"  # 2: one step (0) of apex_jax.checkpoints.Checkpoints (1: a bare orbax composite)


# -------------------------------------------------------------------------------- probes
@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Settings of `train_probes`.

    The defaults reach scikit-learn's accuracy (saga, same penalty) on standardized features:
    Adam with a cosine-decayed step from `learning_rate` to 0 over `steps` full-batch steps; the
    decay also lets weights that the L1 term pushes to zero settle near it.
    """

    l1: float = 1e-3  # coefficient of Σ|W| (SYNAPSE's reference value)
    l2: float = 1e-3  # coefficient of Σ W²
    learning_rate: float = 0.05
    steps: int = 400
    std_floor: float = 1e-6  # features with a smaller train std are left unscaled (std := 1)
    concat: bool = True  # also train the CONCAT probe (with two or more sites)
    # --- the reference (NeuroX) recipe; `ProbeConfig.neurox()` sets all of these
    recipe: str = "full-batch"  # "full-batch" (cosine-decayed Adam, `steps`) or "minibatch" (`epochs`)
    standardize: bool = True  # False: raw features (mean 0, std 1 stored)
    l2_norm: bool = False  # True: the l2 term is l2 · ‖W‖_F (NeuroX); False: l2 · Σ W²
    epochs: int = 10  # minibatch recipe: passes over the train split, batches in data order
    batch_size: int = 32  # minibatch recipe
    init_seed: int = 0  # minibatch recipe: torch.nn.Linear-style uniform init (full-batch starts at 0)

    @classmethod
    def neurox(cls, l1: float = 1e-3, l2: float = 1e-3) -> "ProbeConfig":
        """SYNAPSE's reference recipe (NeuroX `train_logistic_regression_probe` defaults):
        raw features, λ1 Σ|W| + λ2 ‖W‖_F, Adam lr 1e-3, 10 epochs, batch 32."""
        return cls(l1=l1, l2=l2, learning_rate=1e-3, recipe="minibatch", standardize=False, l2_norm=True,
                   epochs=10, batch_size=32)

    def check(self) -> None:
        for name in ("l1", "l2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"ProbeConfig.{name} must be finite and >= 0; got {v}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"ProbeConfig.learning_rate must be > 0; got {self.learning_rate}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"ProbeConfig.steps must be a positive integer; got {self.steps!r}.")
        if not self.std_floor >= 0:
            raise ValueError(f"ProbeConfig.std_floor must be >= 0; got {self.std_floor}.")
        if self.recipe not in RECIPES:
            raise ValueError(f"ProbeConfig.recipe must be one of {RECIPES}; got {self.recipe!r}.")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ProbeConfig.{name} must be a positive integer; got {v!r}.")


class ProbeMetrics(NamedTuple):
    """Test-split metrics of one probe (plus train accuracy and the final training loss)."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class_f1: tuple[float, ...]  # [C], 0 for a class never predicted nor present
    train_accuracy: float
    loss: float  # final penalized training loss

    def __repr__(self) -> str:
        return compact_repr("ProbeMetrics", accuracy=self.accuracy, macro_f1=self.macro_f1,
                            weighted_f1=self.weighted_f1, train_accuracy=self.train_accuracy, loss=self.loss,
                            classes=len(self.per_class_f1))


class Probe(NamedTuple):
    """One linear probe. Logits of raw features x [n, d]: ((x - mean) / std) @ W.T + b."""

    W: np.ndarray  # [C, d] float32, in standardized (or, standardize=False, raw) units: |W[c, j]| ranks neuron j
    b: np.ndarray  # [C] float32
    mean: np.ndarray  # [d] float32, train-split mean
    std: np.ndarray  # [d] float32, train-split std (1 where below the floor)
    metrics: ProbeMetrics

    def __repr__(self) -> str:
        C, d = np.shape(self.W)
        return compact_repr("Probe", classes=C, width=d, nonzero_weights=int((np.abs(self.W) > 1e-4).sum()),
                            accuracy=self.metrics.accuracy, train_accuracy=self.metrics.train_accuracy)

    def logits(self, x: Array) -> np.ndarray:
        """Raw features [n, d] -> logits [n, C]."""
        x = np.asarray(x, np.float32)
        d = self.W.shape[1]
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"features must be [n, {d}]; got shape {x.shape}.")
        return ((x - self.mean) / self.std) @ self.W.T + self.b

    def predict(self, x: Array) -> np.ndarray:
        """Raw features [n, d] -> predicted class [n]."""
        return self.logits(x).argmax(axis=1)


@dataclasses.dataclass(frozen=True)
class ProbeSet:
    """Probes for several sites (and `CONCAT`) trained on one split.

    Provenance (set by `probe_run`, saved and loaded with the probes; None when unknown, e.g.
    probes from `train_probes` directly): `model_params_sha256`, the digest of the weights whose
    features were probed (`apex_jax.engine.store.params_digest`), and `classes`, the class names
    in the probes' class order. `silence_run` / `attack_run` check both against their model.
    """

    probes: dict[str, Probe]  # site -> Probe; CONCAT last if present
    sites: tuple[str, ...]  # the per-layer sites, in the order CONCAT concatenates them
    n_classes: int
    config: ProbeConfig
    model_params_sha256: str | None = None
    classes: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        acc = {s: p.metrics.accuracy for s, p in self.probes.items()}
        best = max(acc, key=acc.get) if acc else None
        return compact_repr("ProbeSet", probes=names(list(self.probes)), classes=self.n_classes,
                            recipe=self.config.recipe, best_site=best, best_accuracy=acc.get(best),
                            mean_accuracy=float(np.mean(list(acc.values()))) if acc else None)

    def __getitem__(self, site: str) -> Probe:
        if site not in self.probes:
            raise KeyError(f"no probe for {site!r}; probes: {list(self.probes)}.")
        return self.probes[site]

    def __iter__(self):
        return iter(self.probes)

    def __len__(self) -> int:
        return len(self.probes)

    def metrics(self, site: str) -> ProbeMetrics:
        return self[site].metrics

    def features_for(self, site: str, x: Array | Mapping[str, Array]) -> Array:
        """`x` itself, or, for a mapping {site: [n, d]}, the site's (or CONCAT's) features."""
        if not isinstance(x, Mapping):
            return x
        names = self.sites if site == CONCAT else (site,)
        missing = [s for s in names if s not in x]
        if missing:
            raise ValueError(f"features lack {missing} needed by the {site!r} probe.")
        return np.concatenate([np.asarray(x[s], np.float32) for s in names], axis=1)

    def logits(self, site: str, x: Array | Mapping[str, Array]) -> np.ndarray:
        """Logits [n, C] of the `site` probe on raw features [n, d] (or a {site: features} dict)."""
        return self[site].logits(self.features_for(site, x))

    def predict(self, site: str, x: Array | Mapping[str, Array]) -> np.ndarray:
        """Predicted classes [n] of the `site` probe (see `logits`)."""
        return self.logits(site, x).argmax(axis=1)

    def table(self) -> list[dict]:
        """One row per probe: site, accuracy, macro/weighted F1, train accuracy."""
        return [
            {"site": s, "accuracy": p.metrics.accuracy, "macro_f1": p.metrics.macro_f1,
             "weighted_f1": p.metrics.weighted_f1, "train_accuracy": p.metrics.train_accuracy}
            for s, p in self.probes.items()
        ]

    def rows(self) -> list[dict]:
        """One row per probe with probes.csv's columns: site, test_accuracy, test_macro_f1,
        test_weighted_f1, train_accuracy, test_f1_class_{c} per class, nonzero_weights
        (|W| > 1e-4) and width (the probe's input features)."""
        rows = []
        for name, p in self.probes.items():
            m = p.metrics
            rows.append({"site": name, "test_accuracy": m.accuracy, "test_macro_f1": m.macro_f1,
                         "test_weighted_f1": m.weighted_f1, "train_accuracy": m.train_accuracy,
                         **{f"test_f1_class_{c}": v for c, v in enumerate(m.per_class_f1)},
                         "nonzero_weights": int((np.abs(p.W) > 1e-4).sum()), "width": int(p.W.shape[1])})
        return rows

    def to_pandas(self):
        """The probes as a pandas DataFrame, one row per probe, with probes.csv's columns (`rows`).

        Raises:
            ImportError: pandas is not installed (`pip install "apex-jax[pandas]"`).
        """
        return frame_from_dicts(self.rows())

    # ---------------------------------------------------------------------------- saving
    def save(self, path: str | Path) -> Path:
        """Writes the probes to the folder `path` (replaced if it exists): one step of an
        `apex_jax.checkpoints.Checkpoints` (orbax), the arrays plus JSON metadata (`FORMAT`)."""
        path = Path(path).absolute()
        names = list(self.probes)
        state = [
            {"W": p.W, "b": p.b, "mean": p.mean, "std": p.std} for p in self.probes.values()
        ]
        meta = {
            "format": FORMAT,
            "names": names,
            "sites": list(self.sites),
            "n_classes": self.n_classes,
            "config": dataclasses.asdict(self.config),
            "shapes": [list(p.W.shape) for p in self.probes.values()],
            "metrics": [p.metrics._asdict() for p in self.probes.values()],
            "model_params_sha256": self.model_params_sha256,
            "classes": None if self.classes is None else list(self.classes),
        }
        if path.is_dir():  # a probe folder holds one step: overwrite it, as orbax's force=True did
            shutil.rmtree(path)
        store = Checkpoints(path)
        try:
            store.save(0, state, meta)
        finally:
            store.close()
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ProbeSet":
        """Reads a checkpoint written by `save`.

        Raises:
            FileNotFoundError: no such folder.
            CheckpointError: the folder is not a complete probe checkpoint.
        """
        path = Path(path).absolute()
        if not path.is_dir():
            raise FileNotFoundError(f"no probe checkpoint at {path} (folder missing).")
        store = Checkpoints(path)
        try:
            meta = store.read_meta()
            if meta.get("format") != FORMAT:
                raise ValueError(f"metadata format is {meta.get('format')!r}, not {FORMAT!r}")
            like = [
                {"W": np.zeros(tuple(shape), np.float32), "b": np.zeros((shape[0],), np.float32),
                 "mean": np.zeros((shape[1],), np.float32), "std": np.zeros((shape[1],), np.float32)}
                for shape in meta["shapes"]
            ]
            state, _ = store.restore(like)
        except Exception as e:
            raise CheckpointError(
                f"probe checkpoint at {path} cannot be read ({type(e).__name__}: {e}); it is "
                "incomplete or corrupt: write it again with ProbeSet.save."
            ) from e
        finally:
            store.close()
        probes = {}
        for name, arrays, m in zip(meta["names"], state, meta["metrics"]):
            m["per_class_f1"] = tuple(m["per_class_f1"])
            probes[name] = Probe(*(np.asarray(arrays[k], np.float32) for k in ("W", "b", "mean", "std")),
                                 ProbeMetrics(**m))
        classes = meta.get("classes")  # absent in probes saved before provenance was recorded
        return cls(probes, tuple(meta["sites"]), int(meta["n_classes"]), ProbeConfig(**meta["config"]),
                   meta.get("model_params_sha256"), None if classes is None else tuple(classes))


def _as_labels(labels: Array, n_classes: int | None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array [n]; got shape {y.shape}.")
    if y.dtype.kind == "b" or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices; got dtype {y.dtype}.")
    hi = int(y.max()) + 1 if n_classes is None else n_classes
    bad = np.unique(y[(y < 0) | (y >= hi)])
    if bad.size:
        raise ValueError(f"labels {bad.tolist()[:10]} are out of range; valid classes are 0..{hi - 1}.")
    return y.astype(np.int64)


def _as_index(idx: Array, n: int, name: str) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D index array; got shape {idx.shape}.")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer row indices; got dtype {idx.dtype}.")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"{name} has rows {bad.tolist()[:10]} outside [0, {n}).")
    if np.unique(idx).size != idx.size:
        raise ValueError(f"{name} repeats rows.")
    return idx.astype(np.int64)


def _check_features(features: Mapping[str, Array]) -> int:
    if not isinstance(features, Mapping) or not features:
        raise ValueError("features must be a non-empty dict {site: [n, d] array}.")
    shapes = {s: np.shape(x) for s, x in features.items()}
    bad = {s: sh for s, sh in shapes.items() if len(sh) != 2 or sh[0] == 0 or sh[1] == 0}
    if bad:
        raise ValueError(f"features must be non-empty [n, d] arrays; got shapes {bad}.")
    ns = {sh[0] for sh in shapes.values()}
    if len(ns) != 1:
        raise ValueError(f"features disagree on the number of examples n: {shapes}.")
    if CONCAT in features:
        raise ValueError(f"{CONCAT!r} is reserved for the all-layers probe; rename that feature set.")
    return ns.pop()


def _standardize(x: np.ndarray, train_idx: np.ndarray, floor: float, standardize: bool = True):
    """Train-split mean/std (float64 sums) and the standardized float32 features [n, d]; with
    `standardize=False` the raw features, mean 0 and std 1."""
    if not standardize:
        d = np.shape(x)[1]
        return np.asarray(x, np.float32), np.zeros(d, np.float32), np.ones(d, np.float32)
    tr = np.asarray(x[train_idx], np.float64)
    mean = tr.mean(axis=0)
    std = tr.std(axis=0)
    std = np.where(std > floor, std, 1.0)  # a constant feature stays ~0 instead of exploding
    z = ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)
    return z, mean.astype(np.float32), std.astype(np.float32)


def _loss(params, x, y, l1, l2, l2_norm: bool = False, weights=None):
    """Penalized mean cross-entropy; x [n, d], y [n]; params (W [C, d], b [C]); `weights` [n]
    (0/1) leave padded rows out of the mean; `l2_norm`: l2 · ‖W‖_F instead of l2 · Σ W²."""
    W, b = params
    logits = x @ W.T + b
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    ce = ce.mean() if weights is None else (ce * weights).sum() / weights.sum()
    return ce + l1 * jnp.abs(W).sum() + l2 * (frobenius(W) if l2_norm else jnp.square(W).sum())


def _optimizer(learning_rate, steps: int):
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps))


def frobenius(W):
    """‖W‖_F with gradient 0 (a subgradient) at W = 0, where √ has none."""
    sq = jnp.square(W).sum()
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def linear_init(d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """torch.nn.Linear's default initialization in distribution: W [C, d] and b [C] uniform on
    ±1/√d (numpy Generator `seed`)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(d)
    return (rng.uniform(-bound, bound, (n_classes, d)).astype(np.float32),
            rng.uniform(-bound, bound, (n_classes,)).astype(np.float32))


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "l2_norm"))
def _fit_minibatch(x, y, W0, b0, l1, l2, learning_rate, *, epochs: int, batch_size: int, l2_norm: bool):
    """Minibatch Adam per stacked feature set: x [G, n, d], y [n], init W0 [C, d], b0 [C]
    -> W [G, C, d], b [G, C], full-data loss [G]. Batches are rows [i·bs, (i+1)·bs) in data
    order; the last, shorter one is padded with weight-0 rows."""
    n = x.shape[1]
    nb = -(-n // batch_size)
    rows = jnp.arange(nb * batch_size).reshape(nb, batch_size)
    valid = (rows < n).astype(x.dtype)
    rows = jnp.minimum(rows, n - 1)
    opt = optax.adam(learning_rate)  # torch.optim.Adam's defaults: b1 .9, b2 .999, eps 1e-8

    def fit_one(x):
        params = (W0, b0)

        def step(carry, i):
            params, state = carry
            grads = jax.grad(_loss)(params, x[rows[i]], y[rows[i]], l1, l2, l2_norm, valid[i])
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        order = jnp.tile(jnp.arange(nb), epochs)
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), order)
        return params, _loss(params, x, y, l1, l2, l2_norm)

    (W, b), loss = jax.vmap(fit_one)(x)
    return W, b, loss


@functools.partial(jax.jit, static_argnames=("steps", "length", "l2_norm"))
def _fit_chunk(params, state, x, y, l1, l2, learning_rate, *, steps: int, length: int, l2_norm: bool = False):
    """`length` more full-batch Adam steps of every stacked probe: params (W [G, C, d], b [G, C]),
    their optimizer states, x [G, n, d], y [n]. `steps` (the schedule's horizon) and `length` are
    static; the step count lives in the optimizer state, so any chunking gives the same run."""
    opt = _optimizer(learning_rate, steps)

    def fit_one(params, state, x):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(_loss)(params, x, y, l1, l2, l2_norm)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), None, length=length)[0]

    return jax.vmap(fit_one)(params, state, x)


@functools.partial(jax.jit, static_argnames=("l2_norm",))
def _final_loss(params, x, y, l1, l2, l2_norm: bool = False):
    return jax.vmap(lambda p, x: _loss(p, x, y, l1, l2, l2_norm))(params, x)


def fit_steps(config: ProbeConfig, n: int) -> int:
    """Optimizer steps `fit_stack` takes on n training rows (what its progress counts)."""
    if config.recipe == "minibatch":
        return config.epochs * -(-n // config.batch_size)
    return config.steps


def fit_stack(x: Array, y: Array, config: ProbeConfig, n_classes: int, bar: Tracker | None = None):
    """Trains probes on stacked (standardized or raw) features x [G, n, d] with labels y [n],
    by `config.recipe`.

    Full batch: the `config.steps` steps run in compiled chunks of `CHUNK_STEPS`; `bar` (a
    `progress.Tracker`) counts them. Minibatch (the reference recipe): one compiled run, counted
    at its end.

    Returns:
        (W [G, C, d], b [G, C], final loss [G]) as numpy float32.
    """
    config.check()
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    G, n, d = x.shape
    l1, l2, lr = (jnp.float32(v) for v in (config.l1, config.l2, config.learning_rate))
    if config.recipe == "minibatch":
        W0, b0 = linear_init(int(d), int(n_classes), config.init_seed)
        W, b, loss = _fit_minibatch(x, y, jnp.asarray(W0), jnp.asarray(b0), l1, l2, lr, epochs=config.epochs,
                                    batch_size=config.batch_size, l2_norm=config.l2_norm)
        if bar is not None:
            bar.update(fit_steps(config, n))
        return np.asarray(W), np.asarray(b), np.asarray(loss)
    params = (jnp.zeros((G, int(n_classes), d), jnp.float32), jnp.zeros((G, int(n_classes)), jnp.float32))
    state = jax.vmap(_optimizer(lr, config.steps).init)(params)
    for start in range(0, config.steps, CHUNK_STEPS):
        length = min(CHUNK_STEPS, config.steps - start)
        params, state = _fit_chunk(params, state, x, y, l1, l2, lr, steps=config.steps, length=length,
                                   l2_norm=config.l2_norm)
        if bar is not None:
            jax.block_until_ready(params)
            bar.update(length)
    loss = _final_loss(params, x, y, l1, l2, config.l2_norm)
    return np.asarray(params[0]), np.asarray(params[1]), np.asarray(loss)


def _metrics(W, b, z, y, train_idx, test_idx, n_classes, loss) -> ProbeMetrics:
    from sklearn.metrics import f1_score

    pred = (z @ W.T + b).argmax(axis=1)
    yt, pt = y[test_idx], pred[test_idx]
    classes = list(range(n_classes))
    f1 = lambda avg: f1_score(yt, pt, labels=classes, average=avg, zero_division=0)
    return ProbeMetrics(
        accuracy=float((pt == yt).mean()),
        macro_f1=float(f1("macro")),
        weighted_f1=float(f1("weighted")),
        per_class_f1=tuple(float(v) for v in f1(None)),
        train_accuracy=float((pred[train_idx] == y[train_idx]).mean()),
        loss=float(loss),
    )


def train_probes(
    features: Mapping[str, Array],
    labels: Array,
    train_idx: Array,
    test_idx: Array,
    config: ProbeConfig = ProbeConfig(),
    n_classes: int | None = None,
    progress: Progress = None,
) -> ProbeSet:
    """Trains one elastic-net logistic probe per site (and the CONCAT probe) at once.

    Args:
        features: {site: [n, d]} (e.g. from `extract_cls`; memory maps are fine).
        labels: [n] integer classes in [0, n_classes).
        train_idx: rows to fit on (and to take the standardization mean/std from).
        test_idx: rows the metrics are computed on; disjoint from `train_idx`.
        config: penalty and optimizer settings.
        n_classes: number of classes; default `labels.max() + 1`.
        progress: optimizer steps done, with rate and ETA (`apex_jax.progress`: None = a bar on
            a terminal only, True = bar or log lines, False = silent, or a callable).

    Returns:
        A `ProbeSet` with W [C, d] (standardized units), b, mean, std and test metrics per site.
    """
    config.check()
    n = _check_features(features)
    y = _as_labels(labels, n_classes)
    if y.shape[0] != n:
        raise ValueError(f"labels have {y.shape[0]} rows but the features have n = {n}.")
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if n_classes < 2:
        raise ValueError(f"probing needs at least 2 classes; got n_classes = {n_classes}.")
    train_idx = _as_index(train_idx, n, "train_idx")
    test_idx = _as_index(test_idx, n, "test_idx")
    overlap = np.intersect1d(train_idx, test_idx)
    if overlap.size:
        raise ValueError(f"train_idx and test_idx share {overlap.size} rows (e.g. {overlap[:5].tolist()}).")

    sites = tuple(features)
    std = {s: _standardize(features[s], train_idx, config.std_floor, config.standardize) for s in sites}
    z = {s: std[s][0] for s in sites}
    if config.concat and len(sites) > 1:
        z[CONCAT] = np.concatenate([z[s] for s in sites], axis=1)
        std[CONCAT] = (None, *(np.concatenate([std[s][i] for s in sites]) for i in (1, 2)))

    # Group probes by width: each group is one vmapped training run over a stacked layer axis.
    groups: dict[int, list[str]] = {}
    for name, zs in z.items():
        groups.setdefault(zs.shape[1], []).append(name)
    y_train = y[train_idx]
    probes: dict[str, Probe] = {}
    with tracker(fit_steps(config, len(train_idx)) * len(groups), f"training {len(z)} probe(s)", "steps",
                 progress) as bar:
        for names in groups.values():
            W, b, loss = fit_stack(np.stack([z[s][train_idx] for s in names]), y_train, config, n_classes, bar)
            for g, s in enumerate(names):
                m = _metrics(W[g], b[g], z[s], y, train_idx, test_idx, n_classes, loss[g])
                probes[s] = Probe(W[g], b[g], std[s][1], std[s][2], m)
    order = [s for s in z]  # sites first, CONCAT last
    return ProbeSet({s: probes[s] for s in order}, sites, n_classes, config)
