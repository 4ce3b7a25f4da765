"""What a run is given: a model and a data set, by name or in memory, checked against each other.

Every run layer (`apex_run`, `probe_run`, `silence_run`, `attack_run`, `finetune_run`) takes its
model and data through these functions, so the command line and Python give the same
guarantees: the input kind matches the model (text vs images), the labels mean something for
the model (`apex_jax.data.check_label_space`), and the run folder records exactly which
weights and which examples made the result (sha256 of both).

    ds = inputs.dataset("vader-movies", split="test", n=32)
    model = inputs.model("runs/demo/finetune/model", dtype="float32")
    space = inputs.check(model, ds, "evaluate", log=print)
    record = inputs.identity("runs/demo/finetune/model", model, "vader-movies", ds)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from apex_jax import data as data_lib
from apex_jax.data import Dataset, LabelSpace
from apex_jax.engine.store import params_digest
from apex_jax.errors import InputError
from apex_jax.models import Model, load, verbalizer

__all__ = ["check", "data_digest", "dataset", "identity", "model", "name_of"]


def dataset(data: Dataset | str | Path, split: str = "test", n: int | None = None, split_seed: int = 0) -> Dataset:
    """The examples a run reads: a data set's split (a built-in name or a file path), or a
    `Dataset` as given (its own examples: `split`, `n` and `split_seed` do not apply)."""
    if isinstance(data, Dataset):
        return data
    return data_lib.get_split(data, split, n=n, seed=split_seed)


def model(model: Model | str | Path, *, dtype: str = "float32", labels: str | None = None,
          prompt: str | None = None) -> Model:
    """The model a run probes: loaded from a name or folder in `dtype`, or a `Model` as given;
    with `labels` (comma-separated label words, one per class) a causal LM is read as a
    classifier through those tokens (`apex_jax.verbalizer`, `prompt` its template)."""
    loaded = model if isinstance(model, Model) else load(str(model), dtype=dtype)
    if labels is None and prompt is None:
        return loaded
    if labels is None:
        raise InputError("--prompt reads a causal LM through label tokens: give --labels too, "
                         "e.g. --labels ' negative, positive'")
    words = labels.split(",")  # leading spaces kept: BPE label tokens usually start with one
    if any(not w.strip() for w in words):
        raise InputError(f"--labels needs one non-empty word per class, comma-separated; got {labels!r}")
    return verbalizer(loaded, words, prompt=prompt or "{text}")


def check(model: Model, data: Dataset, purpose: str, name: str = "the model",
          log: Callable[[str], None] | None = print) -> LabelSpace:
    """The label space of `data` for `model` after the checks every run makes before any work:
    the input kind (text vs image) and the labels (`apex_jax.data.check_label_space`, purpose
    "evaluate" or "probe"); its notes go to `log`."""
    data_lib.check_input_kind(data, "text" if model.config.is_text else "image", name)
    space = data_lib.check_label_space(model.config.n_classes, model.label_names, data, purpose)
    for note in space.notes:
        if log:
            log(f"note: {note}")
    return space


def name_of(thing: Any, default: str) -> str:
    """How a run records a model or data set it was given: the name or path typed, the
    in-memory object's own name, or `default`."""
    if isinstance(thing, (str, Path)):
        return str(thing)
    return str(getattr(thing, "name", None) or default)


def data_digest(data: Dataset) -> str:
    """sha256 over a data set's inputs (texts or image arrays), labels, ids and class names."""
    h = hashlib.sha256()
    inputs = data.inputs
    if isinstance(inputs, np.ndarray):
        a = np.ascontiguousarray(inputs)
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data)
    else:
        for t in inputs:
            b = str(t).encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    for arr in (data.labels, data.ids):
        a = np.ascontiguousarray(np.asarray(arr, np.int64))
        h.update(a.data)
    h.update(json.dumps(list(data.label_names)).encode())
    return h.hexdigest()


def identity(model_arg: Any, loaded: Model, data_arg: Any, data: Dataset, prefix: str = "") -> dict:
    """The run-folder record of which weights and which examples a run read: the model as given,
    its parameters' sha256 (and label tokens when read through a verbalizer), the data as given
    and its examples' sha256. `prefix` names a second data set (e.g. "test_")."""
    rec: dict = {}
    if not prefix:
        rec["model"] = name_of(model_arg, "<in-memory model>")
        rec["model_params_sha256"] = params_digest(loaded.params)
        if getattr(loaded.config, "label_token_ids", None):  # a verbalizer is another classifier
            rec["label_token_ids"] = list(loaded.config.label_token_ids)
            rec["prompt"] = loaded.config.prompt
        rec["data"] = name_of(data_arg, "<in-memory data>")
    rec[f"{prefix}data_sha256"] = data_digest(data)
    return rec


def label_space_record(space: LabelSpace) -> dict:
    """The label space as summary.json records it."""
    return dataclasses.asdict(space)
