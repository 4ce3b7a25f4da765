"""What a run is given: a model and a data set, by name or in memory, checked against each other.

Every run layer (`apex_run`, `probe_run`, `silence_run`, `attack_run`, `finetune_run`) takes its
model and data through these functions, so the command line and Python give the same
guarantees: the input kind matches the model (text vs images), the labels mean something for
the model (`apex_jax.data.check_label_space`), and the run folder records exactly which
weights and which examples made the result (sha256 of both).

    ds = inputs.dataset("vader-movies", split="test", n=32)
    ds = inputs.dataset(pandas_frame, text_column="sentence")   # or a dict, a list of str, images
    model = inputs.model("runs/demo/finetune/model", dtype="float32")
    ds = inputs.align(model, ds)          # string labels renumbered to the model's own id2label
    space = inputs.check(model, ds, "evaluate", log=print)
    cut = inputs.truncation(model, ds, max_length=None, log=print)
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
from apex_jax.models.encoding import count_truncated

__all__ = ["align", "check", "data_digest", "dataset", "identity", "model", "name_of", "split_of", "truncation"]


def split_of(data: Any, split: str | None) -> str | None:
    """The split a run reads of `data`: `split` when given, else test of a built-in data set and
    all of a file or in-memory data (`apex_jax.data.default_split`); None for a `Dataset`,
    which is used as given."""
    if isinstance(data, Dataset):
        return None
    return split or data_lib.default_split(data if isinstance(data, str) else None)


def dataset(data: Any, split: str | None = None, n: int | None = None, split_seed: int = 0, *,
            text_column: str | None = None, label_column: str | None = None) -> Dataset:
    """The examples a run reads: a data set's split (a built-in name or a file path; `split`
    None: `split_of`), the same of data in memory (a pandas DataFrame, a dict of lists, a Hugging
    Face `datasets.Dataset`, a list of strings, an image array: `apex_jax.data.from_memory`;
    `text_column` / `label_column` name the columns of a table or file), or a `Dataset` as given
    (its own examples: `split`, `n` and `split_seed` do not apply)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return data_lib.get_split(data, split_of(str(data), split), n=n, seed=split_seed,
                                  text_column=text_column, label_column=label_column)
    ds = data_lib.from_memory(data, text_column, label_column)
    return data_lib.select(ds, split_of(data, split), n, split_seed)


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


def align(model: Model, data: Dataset) -> Dataset:
    """`data` with string labels renumbered to the model's own classes where the names match
    (`apex_jax.data.align_labels`): a file's labels are numbered alphabetically, a model's by its
    id2label."""
    return data_lib.align_labels(model.label_names, data)


def vocabulary_classifier(model: Model) -> bool:
    """True for a causal LM read through its whole next-token head (no `--labels`)."""
    return bool(getattr(model.config, "lm_head", False)) and not getattr(model.config, "label_token_ids", None)


def check(model: Model, data: Dataset, purpose: str, name: str = "the model",
          log: Callable[[str], None] | None = print, *, vocab_classes: bool = False) -> LabelSpace:
    """The label space of `data` for `model` after the checks every run makes before any work:
    the input kind (text vs image), a causal LM without label tokens (refused where predictions
    matter, purposes "evaluate" and "apex", unless `vocab_classes`: its classes are then its
    vocabulary) and the labels (`apex_jax.data.check_label_space`, purpose "evaluate", "apex"
    or "probe"); its notes go to `log`."""
    data_lib.check_input_kind(data, "text" if model.config.is_text else "image", name)
    if purpose != "probe" and vocabulary_classifier(model) and not vocab_classes:
        raise InputError(
            f"{name} is a causal LM: without label tokens its classes are its {model.config.n_classes:,} "
            "vocabulary entries. Read it as a classifier through one label word per class: --labels "
            "' negative, positive' (labels=...; --prompt for a template), or ask for the vocabulary "
            "explicitly with --vocab-classes (vocab_classes=True)")
    space = data_lib.check_label_space(model.config.n_classes, model.label_names, data, purpose)
    for note in space.notes:
        if log:
            log(f"note: {note}")
    return space


def truncation(model: Model, data: Dataset, max_length: int | None,
               log: Callable[[str], None] | None = print) -> dict:
    """How text inputs are cut: {"max_length": the limit used (the model's own by default),
    "n_truncated": inputs longer than it}; a line goes to `log` when any is cut. {} for images."""
    if data.kind != "text" or not model.config.is_text:
        return {}
    limit, cut = count_truncated(model, data.inputs, max_length)
    if cut and log:
        why = "--max-length" if max_length else "the model's own limit"
        log(f"note: {cut} of {len(data)} inputs are longer than {limit} tokens ({why}) and were cut to "
            f"{limit}; the rest of them is not read")
    return {"max_length": limit, "n_truncated": cut}


def name_of(thing: Any, default: str) -> str:
    """How a run records a model or data set it was given: the name or path typed, the
    in-memory object's own name, or `default`."""
    if isinstance(thing, (str, Path)):
        return str(thing)
    name = getattr(thing, "name", None)  # a DataFrame's .name may be a column: strings only
    return name if isinstance(name, str) and name else default


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
    for arr in (data.labels, data.ids):  # unlabelled: -1 per input
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
