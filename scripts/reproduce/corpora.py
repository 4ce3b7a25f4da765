"""A four-class text task built from data on disk: which VADER corpus a sentence comes from.

The VADER ground-truth sets are four corpora of short texts — movie-review snippets, tweets,
Amazon review snippets and New York Times editorial snippets. The task "vader-corpus" labels each
sentence with its corpus; `per_class` sentences are drawn from each (a seeded sample, so the
classes are balanced) and the sentiment ratings are dropped. It gives SYNAPSE a task with more
than two classes, where per-class rankings differ from the global one and class asymmetry can be
tested.
"""

from __future__ import annotations

import numpy as np

from apex_jax.data import Dataset, load_dataset

CORPORA = ("vader-movies", "vader-tweets", "vader-amazon", "vader-nyt")
NAME = "vader-corpus"


def corpus_dataset(per_class: int = 700, seed: int = 0) -> Dataset:
    """`per_class` sentences of each VADER corpus, labelled by corpus (0 movies, 1 tweets, 2
    amazon, 3 nyt); ids are `corpus · 10^7 + the source id`, so they stay unique and stable."""
    rng = np.random.default_rng(seed)
    texts, labels, ids = [], [], []
    for c, name in enumerate(CORPORA):
        ds = load_dataset(name)
        if per_class > len(ds):
            raise ValueError(f"{name} has {len(ds)} sentences; per_class = {per_class} is too many.")
        rows = np.sort(rng.choice(len(ds), per_class, replace=False))
        texts += [ds.inputs[i] for i in rows]
        labels += [c] * per_class
        ids += (c * 10_000_000 + np.asarray(ds.ids)[rows]).tolist()
    return Dataset(name=NAME, kind="text", inputs=texts, labels=np.asarray(labels, np.int32),
                   label_names=tuple(n.split("-")[1] for n in CORPORA), ids=np.asarray(ids, np.int64))


def load(name: str) -> Dataset:
    """`vader-corpus`, or any built-in data set by name (`apex_jax.data.load_dataset`)."""
    return corpus_dataset() if name == NAME else load_dataset(name)
