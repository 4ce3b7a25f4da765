"""Model vs. data checks, run before any work: the input kind (:func:`check_input_kind`) and the
label space (:func:`check_label_space`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from apex_jax import assets
from apex_jax.data.dataset import KINDS, Dataset
from apex_jax.errors import InputError


_KIND_CHOICES = {
    "text": f"a text data set ({', '.join(assets.VADER_FILES)}, banking77, or a .csv/.jsonl file)",
    "image": "an image data set (mnist5k, digits, or a .npz file)",
}


def check_input_kind(data: Dataset, model_kind: str, model: str = "the model") -> None:
    """Checks that a data set holds the kind of input a model reads, before any work is done.

    Run layers call it right after loading both, so an image ``.npz`` given to a text model (or
    text to an image model) is refused with a message naming both, instead of failing later
    inside the tokenizer. (``Model.encode`` checks the same on its own.)

    Args:
        data: The data set.
        model_kind: ``"text"`` or ``"image"`` (``"text" if model.config.is_text else "image"``).
        model: How to name the model in the message (e.g. its path).

    Raises:
        InputError: The kinds differ (or ``model_kind`` is not one of them).
    """
    if model_kind not in KINDS:
        raise InputError(f"model_kind must be one of {KINDS}, got {model_kind!r}")
    if data.kind != model_kind:
        raise InputError(
            f"data set {data.name!r} holds {data.kind} inputs but {model} is {_a(model_kind)} "
            f"model; give {_KIND_CHOICES[model_kind]}, or {_a(data.kind)} model"
        )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


# Model classes vs. data labels

#: Purposes accepted by :func:`check_label_space`.
LABEL_PURPOSES: tuple[str, ...] = ("evaluate", "probe", "apex")


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """How a data set's labels relate to a model's classes (see :func:`check_label_space`).

    Attributes:
        present: Sorted label values that occur in the data; compute per-class and macro
            metrics over these, not over every class of the model or the data set.
        present_names: The data's names of the present classes.
        n_model_classes: The model's number of classes (``None`` for a head-less model).
        notes: Statements a run should print and record (e.g. that the data names its classes
            by index only, so they were taken to be the model's classes); empty if nothing
            needs saying.
        accuracy: True if predictions can be compared with the labels (always for "evaluate").
        no_accuracy_reason: Why not, when ``accuracy`` is False (e.g. the inputs have no labels).
    """

    present: tuple[int, ...]
    present_names: tuple[str, ...]
    n_model_classes: int | None
    notes: tuple[str, ...] = ()
    accuracy: bool = True
    no_accuracy_reason: str | None = None


def _generic_names(names: Sequence[str]) -> bool:
    """True if class names carry no meaning: ``"0"``, ``"1"``, ... or ``LABEL_0``, ...."""
    return all(
        str(name).strip().lower() in (str(k), f"label_{k}") for k, name in enumerate(names)
    )


def _key(name: str) -> str:
    return str(name).strip().lower()


def align_labels(model_label_names: Sequence[str] | None, data: Dataset) -> Dataset:
    """`data` with its labels renumbered to the model's own classes when the names match.

    A file's string labels are numbered in sorted order ("NEGATIVE" < "POSITIVE", but also
    "positive" < "sarcastic"); a model numbers its classes its own way (``id2label``). When both
    name their classes with real names and every class name of the data is one of the model's
    (case-insensitively), label ``k`` of the data becomes the model's index of that name and the
    data takes the model's ``label_names``. Otherwise `data` is returned as it is (and
    :func:`check_label_space` judges it).
    """
    model_names = tuple(str(x) for x in model_label_names or ())
    if not data.labelled or not model_names or _generic_names(model_names) or _generic_names(data.label_names):
        return data
    index = {_key(n): k for k, n in enumerate(model_names)}
    if len(index) != len(model_names) or any(_key(n) not in index for n in data.label_names):
        return data
    order = np.array([index[_key(n)] for n in data.label_names], np.int64)
    if np.array_equal(order, np.arange(len(order))) and len(order) == len(model_names):
        return data
    return Dataset(data.name, data.kind, data.inputs, order[data.labels], model_names, data.ids)


def _mismatch(model_n_classes: int, model_label_names: Sequence[str] | None, data: Dataset,
              present: tuple[int, ...]) -> tuple[str, str] | None:
    """(short reason, full message) if the data's labels are not the model's classes, else None."""
    outside = [c for c in present if c >= model_n_classes]
    if outside:
        names = ", ".join(data.label_names[c] for c in outside[:10])
        return (f"labels {outside[:10]} ({names}) are not among the model's {model_n_classes} classes",
                f"data set {data.name!r} has labels {outside[:10]} ({names}) but the model has "
                f"{model_n_classes} classes (0..{model_n_classes - 1}); predictions can only be "
                "compared with labels of the model's own classes: use data labelled for this model "
                "(probing another task's features is fine)")
    model_names = tuple(str(x) for x in model_label_names) if model_label_names else ()
    model_named = len(model_names) == model_n_classes and not _generic_names(model_names)
    if not (model_named and not _generic_names(data.label_names)):
        return None
    differ = [c for c in present if _key(data.label_names[c]) != _key(model_names[c])]
    if not differ:
        return None
    pairs = "; ".join(f"label {c}: data {data.label_names[c]!r} vs model {model_names[c]!r}" for c in differ[:6])
    orders = (f"the model's classes, in order: {list(model_names)[:12]}; the data's: "
              f"{list(data.label_names)[:12]}")
    return (f"the data's class names are not the model's ({orders})",
            f"the class names of data set {data.name!r} and of the model disagree ({pairs}); {orders}. "
            "Accuracy against labels from another label set is meaningless: use data labelled for "
            "this model, or name the data's classes as the model does (any order, any case)")


def check_label_space(
    model_n_classes: int | None,
    model_label_names: Sequence[str] | None,
    data: Dataset,
    purpose: str,
) -> LabelSpace:
    """Checks that a data set's labels mean something for a model, given what they are used for.

    Three purposes:

    - ``"evaluate"``: predictions are compared with the labels (accuracy, F1, flip-to-label
      rates, attacks toward a class). Every present label must be one of the model's classes
      (``0 <= label < model_n_classes``), and when both the model and the data name their
      classes with real names (not ``"0"``/``LABEL_0``-style placeholders), the names of the
      present classes must agree (case-insensitively; :func:`align_labels` first renumbers
      data whose names are the model's in another order): a 27-class topic model's class 1 is
      not VADER's "positive". If either side names classes by index only, the data's labels are
      taken to be the model's class indices and a note says so.
    - ``"apex"``: predictions under noise are compared with the clean prediction, so labels are
      optional: unlabelled inputs and inputs labelled for another task are fine, and clean
      accuracy is reported only when the labels pass the "evaluate" checks
      (``LabelSpace.accuracy``; ``no_accuracy_reason`` says why not). The model needs a
      classifier.
    - ``"probe"``: the labels define a task for probes trained on the model's features; labels
      from another task are legitimate, so the model's classes are not compared. The data must
      have at least two present classes (a one-class probe learns nothing).

    Args:
        model_n_classes: The model's number of classes, ``None`` for a model without a head.
        model_label_names: The model's class names (``model.label_names``), or ``None``.
        data: The data (labelled, except for "apex").
        purpose: One of :data:`LABEL_PURPOSES`.

    Returns:
        The present classes (metrics should be computed over these) and notes to report.

    Raises:
        InputError: Unknown purpose; for ``"evaluate"``: a head-less model, unlabelled data,
            labels outside the model's classes, or class names that disagree (the message names
            both orders); for ``"apex"``: a head-less model; for ``"probe"``: unlabelled data or
            fewer than two present classes.
    """
    if purpose not in LABEL_PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}; choose from {', '.join(LABEL_PURPOSES)}")
    if purpose == "apex" and model_n_classes is None:
        raise InputError(
            "APEX compares each input's predictions under noise with its clean prediction, but the model "
            "has no classifier: use a model with a classification head, or read a causal LM through label "
            "tokens (--labels ' negative, positive')")
    if not data.labelled:
        if purpose == "apex":
            return LabelSpace((), (), model_n_classes, (), False, "the inputs have no labels")
        raise InputError(
            f"data set {data.name!r} has no labels, and this command "
            f"{'compares predictions with them' if purpose == 'evaluate' else 'trains probes on them'}: "
            "give labelled data (a 'label' column or field, a 'labels' array in an .npz, label_column= in "
            "Python); APEX needs no labels")
    present = tuple(int(c) for c in np.unique(data.labels))
    present_names = tuple(data.label_names[c] for c in present)
    shown = ", ".join(f"{c} ({data.label_names[c]})" for c in present[:12])
    shown += f", ... ({len(present)} classes)" if len(present) > 12 else ""
    if purpose == "probe":
        if len(present) < 2:
            raise InputError(
                f"data set {data.name!r} ({len(data)} examples) has only class {shown}; a probe "
                "needs examples of at least two classes: use more examples (a larger n) or "
                "another split"
            )
        return LabelSpace(present, present_names, model_n_classes)
    if model_n_classes is None:
        raise InputError(
            f"the model has no classifier, so its predictions cannot be compared with the labels "
            f"of {data.name!r}; load it with num_labels=N (and train the head) or use it for "
            "probing only"
        )
    mismatch = _mismatch(model_n_classes, model_label_names, data, present)
    if mismatch is not None:
        if purpose == "apex":
            return LabelSpace(present, present_names, model_n_classes, (), False,
                              f"{mismatch[0]}: the inputs are labelled for another task")
        raise InputError(mismatch[1])
    notes: list[str] = []
    model_names = tuple(str(x) for x in model_label_names) if model_label_names else ()
    model_named = len(model_names) == model_n_classes and not _generic_names(model_names)
    data_named = not _generic_names(data.label_names)
    if model_named != data_named:
        notes.append(
            f"class names not compared (model: {list(model_names)[:6] or 'none'}, data: "
            f"{list(data.label_names)[:6]}): data label k is taken to be model class k"
        )
    if len(present) < model_n_classes:
        notes.append(
            f"{len(present)} of the model's {model_n_classes} classes occur in the data "
            f"({shown}); per-class and macro metrics cover these only"
        )
    return LabelSpace(present, present_names, model_n_classes, tuple(notes))
