"""MiniLM sentiment classifiers fine-tuned here, cached for the reproduction's text claims.

`fine_tuned(config, work)` fine-tunes the bundled pretrained MiniLM (`apex_jax.train`:
Optax AdamW, early stopping on the validation split, orbax checkpoints every epoch, resumable)
on the first `n_train` examples of a data set's stratified train split and saves it as a
Hugging Face folder. The folder name carries a hash of the settings, and `metrics.json` is
written last, so a finished model is loaded instead of retrained and quick / full models never
mix. Claims 1 (text part) and 5 share the vader-movies model this way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import apex_jax
from apex_jax import TrainConfig, evaluate, train
from apex_jax.data import split_dataset
from . import corpora


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    data: str = "vader-movies"
    n_train: int | None = 4000  # first n of the train split (None: all of it)
    mode: str = "full"  # "full" or "head" (classifier only)
    epochs: int = 2
    batch_size: int = 32
    max_length: int = 64
    split_seed: int = 0
    seed: int = 0
    # validation (early stopping) and test accuracy on the first n of those splits (their order
    # is interleaved by class, so a prefix is near-stratified); None: the whole splits
    n_eval: int | None = None

    @classmethod
    def quick(cls, data: str = "vader-movies") -> "FineTuneConfig":
        """Seconds, not minutes: the classifier head alone on 96 short sentences, validated and
        tested on 200 sentences each (forwards over the whole val and test splits cost more than
        the rest of the quick fine-tune)."""
        return cls(data=data, n_train=96, mode="head", epochs=1, batch_size=32, max_length=32, n_eval=200)

    def key(self) -> str:
        d = dataclasses.asdict(self)
        if d["n_eval"] is None:  # the settings before n_eval existed: their cached models keep their key
            del d["n_eval"]
        blob = json.dumps(d, sort_keys=True)
        return f"{self.data}-{self.mode}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def splits(config: FineTuneConfig) -> dict:
    """The stratified train / val / test splits of the config's data set (train cut to n_train)."""
    s = split_dataset(corpora.load(config.data), seed=config.split_seed)
    if config.n_train is not None:
        s["train"] = s["train"].subset(range(min(config.n_train, len(s["train"]))))
    return s


def cached(folder: Path, fine_tune: Callable[[Path], dict]) -> tuple[Path, dict]:
    """(`folder`/model, its metrics) of a fine-tune cached in `folder`: `metrics.json` is written
    last (by a rename), so a finished model is loaded, never retrained; otherwise
    `fine_tune(folder)` saves the model as `folder`/model and returns its metrics."""
    done = folder / "metrics.json"
    if done.exists():
        return folder / "model", json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    metrics = fine_tune(folder)
    tmp = folder / "metrics.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.rename(done)
    return folder / "model", metrics


def fine_tuned(config: FineTuneConfig, work: str | Path, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """(HF folder of the fine-tuned model, its metrics); trains it first if not cached in `work`."""
    return cached(Path(work) / "minilm" / config.key(), lambda folder: _fine_tune(config, folder, log))


def _fine_tune(config: FineTuneConfig, folder: Path, log: Callable[[str], None]) -> dict:
    t0 = time.perf_counter()
    s = splits(config)
    if config.n_eval is not None:
        s = {**s, **{k: s[k].subset(range(min(config.n_eval, len(s[k])))) for k in ("val", "test")}}
    full = corpora.load(config.data)
    model = apex_jax.load("minilm", num_labels=full.n_classes, label_names=full.label_names, seed=config.seed)
    log(f"fine-tuning MiniLM ({config.mode}) on {len(s['train'])} {config.data} examples, {config.epochs} epochs")
    tc = TrainConfig(mode=config.mode, batch_size=config.batch_size, max_epochs=config.epochs,
                     patience=1, max_length=config.max_length, seed=config.seed)
    model, history = train(model, s["train"], s["val"], tc, out_dir=folder / "checkpoints", log=log)
    test = evaluate(model, model.params, s["test"], max_length=config.max_length)
    model.save(folder / "model")
    metrics = {"config": dataclasses.asdict(config), "n_train": len(s["train"]), "n_val": len(s["val"]),
               "n_test": len(s["test"]), "test_accuracy": round(float(test["accuracy"]), 4),
               "best_val_accuracy": round(float(history["best_val_accuracy"]), 4),
               "epochs_run": len(history["epochs"]), "seconds": round(time.perf_counter() - t0, 1)}
    log(f"fine-tuned {config.data}: test accuracy {metrics['test_accuracy']:.4f} ({metrics['seconds']} s)")
    return metrics


# The two sentiment domains of the text claims. Movies is cut to 4,000 training sentences (of
# 7,397) so its fine-tuning fits the 30-minute budget of a claim script on 2 CPU cores.
DOMAINS = {
    "vader-movies": FineTuneConfig(data="vader-movies", n_train=4000),
    "vader-tweets": FineTuneConfig(data="vader-tweets", n_train=None),
    # which corpus a sentence comes from (4 classes, 700 each; `corpora`): 1,960 training sentences
    "vader-corpus": FineTuneConfig(data="vader-corpus", n_train=None),
}


def domain_config(data: str, quick: bool = False) -> FineTuneConfig:
    """The fine-tuning settings of a text domain (the quick variant for smoke tests)."""
    if data not in DOMAINS:
        raise ValueError(f"no fine-tuning settings for {data!r}; choose from {', '.join(DOMAINS)}.")
    return FineTuneConfig.quick(data) if quick else DOMAINS[data]
