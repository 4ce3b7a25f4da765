"""Claim 1, text part — APEX regularity on a fine-tuned MiniLM (vader-movies).

Protocol. The probed model is the bundled MiniLM fine-tuned on the first sentences of the
`vader-movies` train split (`minilm.fine_tuned`, cached and shared with claim 5); the pool is
the sentences it was fine-tuned on. APEX (Gaussian noise on every block's output, σ relative to
each site's RMS, K draws per σ) gives the escape σ of a random sample of them: where the share
of draws keeping the clean prediction falls below 0.75, halfway between 1 and chance (with two
classes that share tends to 0.5 at large σ, so the ViT protocol's 0.5 is often never crossed).

The ViT part (`regularity`) gets its regularity metrics from M models of the probed model's
own kind, each trained on a random half of the pool. Fine-tuning M MiniLMs is out of reach on a
CPU, so here the ensemble is of cheap heads on frozen features: every pool sentence is encoded
once by the *pretrained* MiniLM (no fine-tuning, so the metrics do not depend on the probed
model) as the mean of its last block's output over its real tokens (the sentence embedding this
sentence-transformer was trained to produce), the features are standardized, and M heads
(logistic regression, or a one-hidden-layer MLP) are trained at once (one `jax.vmap`-ed Optax
step over members, mini-batch epochs in `lax.scan`), each on its own random half of the pool:

- C-score estimate: accuracy on the sentence of the heads that did not train on it;
- learning-speed proxy: the mean training-time accuracy on the sentence (correct in its
  training batch, before the update) over all epochs of the heads that trained on it.

Reported: Spearman ρ (log escape σ and the area under the consistency curve vs each metric,
and between the two metrics) with BCa bootstrap 95% intervals over sentences; a plot. Baselines
(`regularity.margin_baseline`, `regularity.input_noise_baseline`): the clean softmax margin, and
the escape σ of the same rule, grid and draws with noise on the embedding output `hook_embed`
only (input noise: tokens are discrete), with the partial ρ of escape σ given them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import apex_jax
from apex_jax import Model, block_site, fileio, run_apex
from . import common, ensembles, minilm, provenance, regularity, stats
from .reporting import estimator_sentence, num
from .rules.regularity import verdict  # noqa: F401  (claim 1's rules: both parts judged alike)

# Where the MiniLM's input noise goes (`input_noise_baseline`): tokens are discrete, so the
# embedding output (token + position + segment embeddings after their LayerNorm) is the input.
EMBED_SITE = "hook_embed"
INPUT_NOISE = ("Gaussian noise on the embedding output `hook_embed` (tokens are discrete), σ × its RMS over "
               "real tokens")

NAME = "regularity_text"
CLAIM = 1
TITLE = "APEX regularity (MiniLM)"


@dataclasses.dataclass(frozen=True)
class Settings:
    data: str = "vader-movies"
    n_heads: int = 32
    subset: float = 0.5
    hidden: int = 0  # width of the heads' hidden layer; 0: logistic regression
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    n_test: int | None = None  # test sentences for the heads' accuracy (None: the whole test split)
    n_apex: int = 300
    sigma_lo: float = 0.02
    sigma_hi: float = 4.0
    n_sigmas: int = 10
    draws: int = 16
    # Escape = the share of draws keeping the clean prediction falls below this. With 2 classes
    # the share tends to 0.5 (a coin flip) at large σ, so the ViT protocol's 0.5 is never
    # crossed by about a quarter of the sentences; 0.75 is halfway between keeping every draw
    # and chance, (1 + 1/C) / 2, as 0.55 would be for 10 classes.
    threshold: float = 0.75
    seed: int = 0
    pad_multiple: int | None = None  # the engine's length buckets (None: its default)

    @classmethod
    def quick(cls) -> "Settings":
        # the quick fine-tune's 96 sentences: 16 heads on 48 each, 3 steps of 16 per epoch; APEX
        # on half of them (fewer make the rank correlations too noisy to check)
        return cls(n_heads=16, epochs=10, batch_size=16, learning_rate=3e-3, n_test=128, n_apex=48,
                   n_sigmas=6, draws=4, pad_multiple=32)  # quick: one length bucket (max_length 32), one compile


def main(argv=None) -> dict:
    args = common.parser(NAME, "Claim 1 (MiniLM): escape noise vs C-score estimate and learning speed "
                               "on vader-movies.").parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    return run(s, common.out_dir(args, NAME), Path(args.work), common.logger(args), quick=args.quick)


def run(s: Settings, out: Path, work: Path, log=print, quick: bool = False) -> dict:
    """Runs the claim (fine-tuning the probed MiniLM into `work` first if not cached), writes
    samples.csv, regularity_text.png and summary.json into `out`, returns the summary."""
    prov = provenance.stamp(NAME)  # the code and rules about to produce the numbers
    timer = common.Timer()
    config = minilm.domain_config(s.data, quick)
    folder, ft = minilm.fine_tuned(config, work, log)
    model = apex_jax.load(str(folder))
    parts = minilm.splits(config)
    pool, test = parts["train"], parts["test"]
    if s.n_test is not None:
        test = test.subset(range(min(s.n_test, len(test))))
    timer.mark("fine_tune")

    x_pool, x_test = _features(config, [pool, test], work, log)
    timer.mark("features")
    members = ensembles.random_members(len(pool), s.n_heads, int(round(s.subset * len(pool))), seed=s.seed)
    heads = train_heads(x_pool, pool.labels, members, x_test, test.labels, s, log)
    timer.mark("heads")

    # APEX on a random sample of the sentences the probed model was fine-tuned on
    rows = np.sort(np.random.default_rng(s.seed).choice(len(pool), min(s.n_apex, len(pool)), replace=False))
    sigmas = common.sigma_grid(s.sigma_lo, s.sigma_hi, s.n_sigmas)
    sites = apex_jax.parse_sites(model, "resid_post")
    batch = model.encode([pool.inputs[r] for r in rows], max_length=config.max_length)
    engine = common.engine_kw(s.pad_multiple)
    ar = run_apex(model, model.params, batch, pool.ids[rows], sigmas, sites=sites, draws=s.draws,
                  seed=s.seed, threshold=s.threshold, progress=False, **engine)
    timer.mark("apex")
    escape = common.escape_sigma_interpolated(ar.consistency, sigmas, s.threshold)
    area = ar.consistency.mean(1)  # mean share kept over the log-spaced grid
    margin = common.softmax_margin(common.clean_logits(model, model.params, dict(batch)))
    # the input-noise baseline: the same escape rule, σ grid and draws, noise on the embedding
    # output only (tokens are discrete: that is the first place Gaussian noise can go)
    ar_in = run_apex(model, model.params, batch, pool.ids[rows], sigmas, sites=[EMBED_SITE], draws=s.draws,
                     seed=s.seed, threshold=s.threshold, progress=False, **engine)
    input_escape = common.escape_sigma_interpolated(ar_in.consistency, sigmas, s.threshold)
    timer.mark("input_noise")

    cscore, speed = heads["cscore"][rows], heads["learning_speed"][rows]
    results = _results(escape, area, cscore, speed, sigmas, heads, rows)
    results.update(regularity.margin_baseline(np.log(escape), cscore, speed, margin))
    results.update(regularity.input_noise_baseline(np.log(escape), input_escape, cscore, speed, margin, sigmas,
                                                   s.draws, where=INPUT_NOISE, scale=ar_in.site_rms[EMBED_SITE]))
    results.update({"pool_size": int(len(pool)), "n_test": int(len(test)),
                    "clean_accuracy_probed": float((ar.clean == pool.labels[rows]).mean()),
                    "fine_tuned_test_accuracy": ft["test_accuracy"],
                    "fine_tuned_val_accuracy": ft["best_val_accuracy"],
                    "fine_tune_seconds": ft["seconds"], "fine_tune_epochs_run": ft["epochs_run"]})
    timer.mark("statistics")
    fileio.write_rows(out / "samples.csv",
                     ["id", "label", "clean_prediction", "escape_sigma", "consistency_area", "cscore",
                      "learning_speed", "clean_margin", "input_noise_escape_sigma", "text"],
                     [(int(pool.ids[r]), int(pool.labels[r]), int(ar.clean[j]), escape[j], area[j], cscore[j],
                       speed[j], margin[j], input_escape[j], pool.inputs[r]) for j, r in enumerate(rows)])
    common.plot_regularity(out / f"{NAME}.png", escape, cscore, speed, results)
    timer.mark("outputs")
    summary = {"claim": CLAIM, "name": NAME, "quick": quick, **prov,
               "settings": {**dataclasses.asdict(s), "fine_tune": dataclasses.asdict(config)},
               "escape_sigma_estimator": common.ESCAPE_SIGMA_ESTIMATOR, "sigmas": sigmas.tolist(), "sites": sites,
               "mean_consistency": ar.consistency.mean(0).tolist(),
               "results": results, "timing": timer.summary(), "versions": fileio.versions()}
    fileio.write_json(out / "summary.json", summary)
    r = results
    log(f"[{NAME}] n={r['n_examples']}: Spearman(log escape σ, C-score) = "
        f"{common.fmt_rho(r['escape_vs_cscore'])}; (log escape σ, learning speed) = "
        f"{common.fmt_rho(r['escape_vs_learning_speed'])} ({summary['timing']['total_seconds']} s)")
    return summary


def _results(escape, area, cscore, speed, sigmas, heads: dict, rows) -> dict:
    """The correlations and counts of the summary (per sampled sentence: escape, area, cscore,
    speed [n]; `heads` from `train_heads`; rows [n] into the pool)."""
    log_escape = np.log(escape)
    held_out = heads["held_out"][rows]
    return {
        "escape_vs_cscore": stats.spearman(log_escape, cscore, seed=1),
        "escape_vs_learning_speed": stats.spearman(log_escape, speed, seed=2),
        "cscore_vs_learning_speed": stats.spearman(cscore, speed, seed=3),
        "area_vs_cscore": stats.spearman(area, cscore, seed=4),
        "area_vs_learning_speed": stats.spearman(area, speed, seed=5),
        "n_examples": int(len(rows)),
        "escaped_on_grid": int(np.isfinite(escape).sum()),
        "escape_below_grid": int((escape <= sigmas[0]).sum()),
        # sample quantiles (inf: beyond the grid), not interpolated between a finite σ and inf
        "escape_sigma_quartiles": np.quantile(escape, [0.25, 0.5, 0.75], method="inverted_cdf").tolist(),
        "cscore_mean": float(np.nanmean(cscore)), "learning_speed_mean": float(np.nanmean(speed)),
        "holdout_heads_per_example": {"min": int(held_out.min()), "mean": float(held_out.mean())},
        "head_test_accuracy": heads["test_accuracy"], "head_train_accuracy": heads["train_accuracy"],
        "head_training_seconds": heads["seconds"],
    }


# ------------------------------------------------------------------------------ features


def sentence_features(model: Model, sentences: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
    """Sentence embeddings: the last block's output averaged over each sentence's real tokens
    (not padding), as sentence-transformers pools all-MiniLM-L6-v2. [n, d_model] float32.

    Sentences are batched by length (less padding) and every batch is padded to `batch_size`
    rows and a multiple of 16 tokens, so a few compiled shapes serve any number of sentences.
    """
    site = block_site(model.config.n_layers - 1, "hook_resid_post")
    fn = model.jitted((site,))
    order = np.argsort([len(t) for t in sentences], kind="stable")
    out = np.empty((len(sentences), model.config.d_model), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = model.encode([sentences[i] for i in rows], max_length=max_length, pad_to_multiple_of=16)
        # repeat the last row to fill the batch (its pooled vector is dropped below)
        enc = {k: np.pad(v, ((0, batch_size - len(rows)), (0, 0)), mode="edge") for k, v in enc.items()}
        hidden = np.asarray(fn(model.params, enc).captured[site])  # [batch, pos, d]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        out[rows] = ((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0))[: len(rows)]
    return out


def _features(config: minilm.FineTuneConfig, parts: list, work: Path, log) -> list[np.ndarray]:
    """Pretrained-MiniLM sentence features of each data set in `parts`, standardized with the
    first one's (the pool's) per-feature mean and spread; cached in `work`. [[n_i, d]]"""
    ids = [np.asarray(p.ids) for p in parts]
    key = hashlib.sha256(json.dumps({"data": config.data, "max_length": config.max_length}).encode()
                         + b"".join(i.tobytes() for i in ids)).hexdigest()[:10]
    path = work / NAME / f"features-{config.data}-{key}.npz"
    if not path.exists():
        t0 = time.perf_counter()
        model = apex_jax.load("minilm")
        feats = [sentence_features(model, list(p.inputs), config.max_length) for p in parts]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, *feats)
        tmp.rename(path)
        log(f"encoded {sum(len(p) for p in parts)} sentences with the pretrained MiniLM "
            f"({time.perf_counter() - t0:.1f} s)")
    with np.load(path) as z:
        feats = [z[f"arr_{i}"] for i in range(len(parts))]
    mean, std = feats[0].mean(0), feats[0].std(0)
    # the pool's statistics use no labels, so held-out heads stay independent of their examples
    return [(f - mean) / np.maximum(std, 1e-6) for f in feats]


# --------------------------------------------------------------------------------- heads


def train_heads(x: np.ndarray, y: np.ndarray, members: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                s: Settings, log: Callable[[str], None] = print) -> dict:
    """Trains M classifier heads at once on frozen features, each on its own examples.

    Args:
        x: pool features [N, d]; y: labels [N].
        members: [M, S] indices into the pool: what each head trains on.
        x_test, y_test: [T, d], [T]: for the heads' test accuracy.
        s: Settings (head width, epochs, batch size, learning rate, weight decay, seed).

    Returns:
        {cscore [N] (accuracy of the heads that did not train on the example; NaN if none),
        learning_speed [N] (mean training-time accuracy over the heads that trained on it and
        every epoch; NaN if none), held_out [N] (heads that did not train on it),
        test_accuracy, train_accuracy ([M] lists), seconds}.
    """
    t0 = time.perf_counter()
    m, n = members.shape[0], len(x)
    n_classes = int(max(y.max(), y_test.max())) + 1
    bs = s.batch_size
    steps = members.shape[1] // bs
    if steps < 1:
        raise ValueError(f"each head trains on {members.shape[1]} examples, fewer than one batch of {bs}.")
    params = _init_heads(m, x.shape[1], n_classes, s.hidden, s.seed)
    opt_state = jax.vmap(_optimizer(s.learning_rate, s.weight_decay).init)(params)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    hits, seen = np.zeros((m, n), np.int64), np.zeros((m, n), np.int64)
    epoch_acc = []
    for epoch in range(s.epochs):
        rng = np.random.default_rng([s.seed, epoch])
        order = np.stack([members[i, rng.permutation(members.shape[1])[: steps * bs]] for i in range(m)])
        idx = order.reshape(m, steps, bs).transpose(1, 0, 2)  # [steps, M, B]
        params, opt_state, correct = _epoch(params, opt_state, xj, yj, jnp.asarray(idx, jnp.int32),
                                            learning_rate=s.learning_rate, weight_decay=s.weight_decay)
        correct = np.asarray(correct).transpose(1, 0, 2).reshape(m, steps * bs)  # [M, steps*B]
        np.add.at(hits, (np.repeat(np.arange(m), steps * bs), order.ravel()), correct.ravel())
        np.add.at(seen, (np.repeat(np.arange(m), steps * bs), order.ravel()), 1)
        epoch_acc.append(correct.mean(1))
    in_train = np.zeros((m, n), bool)
    in_train[np.repeat(np.arange(m), members.shape[1]), members.ravel()] = True
    seconds = round(time.perf_counter() - t0, 1)
    # the ViT ensembles' record: its C-score / learning-speed definitions serve the heads too
    res = ensembles.EnsembleResult(jax.device_get(params), hits, seen,
                                   np.asarray(_predict(params, xj).argmax(-1)) == y, in_train,
                                   np.stack(epoch_acc), s.epochs, seconds)
    test_correct = np.asarray(_predict(params, jnp.asarray(x_test, jnp.float32)).argmax(-1)) == y_test
    test_acc, train_acc = test_correct.mean(1), res.train_accuracy()
    log(f"trained {m} heads (hidden {s.hidden or 'none'}) at once, {s.epochs} epochs: test accuracy "
        f"{test_acc.min():.3f}..{test_acc.max():.3f}, train {train_acc.min():.3f}..{train_acc.max():.3f} "
        f"({seconds} s)")
    return {"cscore": res.holdout_accuracy(), "learning_speed": res.learning_speed(), "held_out": (~in_train).sum(0),
            "test_accuracy": test_acc.round(4).tolist(), "train_accuracy": train_acc.round(4).tolist(),
            "seconds": seconds}


def _init_heads(m: int, d: int, c: int, hidden: int, seed: int) -> dict:
    """Stacked parameters of M heads: {w [M, d, c], b [M, c]} for logistic regression, or with
    {w1 [M, d, h], b1 [M, h]} in front for an MLP; LeCun-normal weights, zero biases."""
    keys = jax.random.split(jax.random.key(seed), 2)
    init = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    if hidden <= 0:
        return {"w": init(keys[0], (m, d, c)), "b": jnp.zeros((m, c))}
    return {"w1": init(keys[0], (m, d, hidden)), "b1": jnp.zeros((m, hidden)),
            "w": init(keys[1], (m, hidden, c)), "b": jnp.zeros((m, c))}


def _logits(p: dict, x: jax.Array) -> jax.Array:
    """One head's logits [..., C] of features x [..., d]."""
    if "w1" in p:
        x = jax.nn.gelu(x @ p["w1"] + p["b1"])
    return x @ p["w"] + p["b"]


@jax.jit
def _predict(params: dict, x: jax.Array) -> jax.Array:
    """Every head's logits on shared features: [M, N, C]."""
    return jax.vmap(_logits, in_axes=(0, None))(params, x)


def _optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """The heads' AdamW."""
    return optax.adamw(learning_rate, weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnames=("learning_rate", "weight_decay"), donate_argnums=(0, 1))
def _epoch(params: dict, opt_state, x: jax.Array, y: jax.Array, idx: jax.Array, *, learning_rate: float,
           weight_decay: float):
    """One epoch: `lax.scan` over steps of an AdamW step vmapped over heads. x [N, d], y [N],
    idx [steps, M, B] -> (params, opt_state, correct [steps, M, B]); `correct` is each batch
    example's correctness *before* the step. The optimizer's constants are static arguments, so
    jit's cache compiles once per (settings, shapes)."""
    tx = _optimizer(learning_rate, weight_decay)

    def loss(p, xb, yb):
        logits = _logits(p, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

    def one_step(p, o, xb, yb):
        (_, logits), g = jax.value_and_grad(loss, has_aux=True)(p, xb, yb)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, jnp.argmax(logits, -1) == yb

    step = jax.vmap(one_step)

    def body(carry, rows):  # rows [M, B]: every head's batch
        p, o, c = step(*carry, x[rows], y[rows])
        return (p, o), c

    (params, opt_state), correct = jax.lax.scan(body, (params, opt_state), idx)
    return params, opt_state, correct


# ------------------------------------------------------------------------------ report section

SECTION = """## Claim 1 (MiniLM) — escape noise agrees with per-sample regularity metrics on text

**Verdict: {verdict}.**

{reason}

Setup: the bundled sentence-transformers MiniLM (all-MiniLM-L6-v2), fine-tuned here ({ft_mode},
{ft_epochs} epochs) on the first {pool} sentences of the `{data}` train split (test accuracy
{ft_test}), is probed: APEX noise on every block's output, {n_sigmas} σ from {sigma_lo} to
{sigma_hi}, {draws} draws, on {n} of its training sentences (clean accuracy {probed_acc}); {escaped}
of them escape on the grid ({below} already at its smallest σ). C-score estimate: hold-out
accuracy ({holdout_mean} hold-out heads per sentence on average); learning speed: mean
training-time accuracy.

**What differs from the ViT protocol.** (1) Fine-tuning many MiniLMs is out of reach on a CPU, so
the regularity metrics come from {n_heads} {head} trained at once (one vmapped Optax step,
{epochs} epochs) on *frozen* features of the *pretrained* MiniLM (the mean of its last block's
output over real tokens, standardized), each on its own random {subset_pct}% of the {pool}
sentences; none of them is the probed model, and they share its pretrained weights but not its
fine-tuning. Their test accuracy on {n_test} test sentences: {head_acc_min}–{head_acc_max}.
(2) With two classes the share of draws keeping the clean prediction tends to 0.5 at large σ, so a
sentence escapes where that share falls below {threshold} (halfway from 1 to chance) instead of
the ViTs' 0.5.

| escape measure | vs C-score estimate: Spearman ρ [95% CI] | vs learning speed: Spearman ρ [95% CI] |
|---|---|---|
| log escape σ | {esc_c} | {esc_s} |
| area under the consistency curve | {area_c} | {area_s} |
{margin_rows}{input_rows}
{ceiling}{input_noise}{estimator}The two regularity metrics agree with each other at ρ = {c_s}. Run time {seconds} s (fine-tuning
the probed model: {ft_seconds} s, wall clock, possibly in an earlier run; training the heads:
{head_seconds} s). Files: `regularity_text/samples.csv`, `regularity_text/summary.json`.

![escape σ vs regularity (MiniLM)](regularity_text/regularity_text.png)
"""



def section(summary: dict) -> tuple[str, str]:
    """The README section of the MiniLM part of claim 1: (verdict, markdown text)."""
    r, st = summary["results"], summary["settings"]
    v, _ = verdict(r)
    ft, acc = st["fine_tune"], r["head_test_accuracy"]
    head = "logistic-regression heads" if not st["hidden"] else f"MLP heads (one hidden layer of {st['hidden']})"
    text = SECTION.format(
        verdict=v, reason=regularity.verdict_lines(r), ft_mode="all weights" if ft["mode"] == "full" else "classifier head only",
        ft_epochs=r["fine_tune_epochs_run"], pool=f"{r['pool_size']:,}", data=st["data"],
        ft_test=num(r["fine_tuned_test_accuracy"]), n_sigmas=st["n_sigmas"], sigma_lo=st["sigma_lo"],
        sigma_hi=st["sigma_hi"], draws=st["draws"], n=r["n_examples"], probed_acc=num(r["clean_accuracy_probed"]),
        escaped=r["escaped_on_grid"], below=r["escape_below_grid"], threshold=st["threshold"],
        n_heads=st["n_heads"], head=head, epochs=st["epochs"],
        subset_pct=round(100 * st["subset"]), n_test=f"{r['n_test']:,}", head_acc_min=num(min(acc)),
        head_acc_max=num(max(acc)), holdout_mean=num(r["holdout_heads_per_example"]["mean"], 1),
        **regularity.correlation_cells(r), margin_rows=regularity.margin_rows(r),
        ceiling=regularity.ceiling_sentence(r), input_rows=regularity.input_rows(r),
        input_noise=regularity.input_sentence(r), estimator=estimator_sentence(summary),
        seconds=summary["timing"]["total_seconds"], ft_seconds=r["fine_tune_seconds"],
        head_seconds=r["head_training_seconds"])
    return v, text
