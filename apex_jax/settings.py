"""One settings object per command: the single definition of every option.

A command's settings are a frozen dataclass. Each field carries its default, its help text and
its valid range, so one definition drives everything that used to spell an option out again:

- the command line: :func:`add_options` generates the argparse options (help and default shown);
- the Python run layers (`apex_run`, `probe_run`, `silence_run`, `attack_run`, `finetune_run`)
  take the same object (or its fields as keywords);
- the run folder: :meth:`Settings.record` is what run.json and summary.json record, and what
  the run's page shows.

Ranges are checked once, when the object is made (``__post_init__``), with messages that name
the command-line flag:

    >>> ApexSettings(draws=0)
    Traceback (most recent call last):
    ...
    apex_jax.errors.InputError: --draws must be a positive integer (>= 1); got 0
    >>> ApexSettings(sigmas="0.1,1").sigmas
    (0.10000000149011612, 1.0)

Spec strings (``--sigmas logspace:0.01:4:16``, ``--k synapse``) are parsed here too, so a σ grid
is a tuple of floats everywhere after this point.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, ClassVar

from apex_jax.data.splits import SPLITS
from apex_jax.engine.plan import PAD_MULTIPLE
from apex_jax.errors import InputError
from apex_jax.specs import check_k, check_sigmas, parse_k, parse_sigmas

__all__ = ["ApexSettings", "AttackSettings", "DemoSettings", "FinetuneSettings", "ProbeSettings", "Settings",
           "SilenceSettings", "add_options", "from_args", "option"]

DTYPES = ("float32", "bfloat16")


def option(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, choices: tuple | None = None, record: bool = True,
           metavar: str | None = None) -> Any:
    """A settings field: its default, help text and valid range.

    Args:
        default: the value when the option is not given.
        help: one line for ``--help`` (the default is appended by argparse).
        minimum: the smallest valid value (inclusive); None = no lower bound.
        maximum: the largest valid value (inclusive).
        above: a strict lower bound (the value must be > above).
        choices: the valid values.
        record: False for options that cannot change a result (e.g. a chunk size): they are
            left out of run.json's settings, so changing them resumes the same run.
        metavar: the placeholder shown in ``--help``.
    """
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "above": above, "choices": choices,
            "record": record, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _num(v: float) -> str:
    """A number for a message: integers in full (4294967295, not 4.29497e+09)."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e18 or isinstance(v, int) else f"{v:g}"


def _check_field(f: dataclasses.Field, value: Any) -> None:
    """InputError unless `value` is in the field's range (None = unset is always fine)."""
    m, flag = f.metadata, _flag(f.name)
    if value is None:
        return
    if m["choices"] is not None and value not in m["choices"]:
        raise InputError(f"{flag} must be one of {', '.join(map(str, m['choices']))}; got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and math.isnan(value):
        raise InputError(f"{flag} must be a number; got nan")
    lo, hi, above = m["minimum"], m["maximum"], m["above"]
    is_int = f.type in ("int", "int | None")
    if is_int and int(value) != value:
        raise InputError(f"{flag} must be an integer; got {value}")
    if is_int and lo == 1 and value < 1:
        raise InputError(f"{flag} must be a positive integer (>= 1); got {value}")
    if above is not None and hi is not None and not above < value <= hi:
        raise InputError(f"{flag} must lie in ({_num(above)}, {_num(hi)}]; got {_num(value)}")
    if above is not None and not value > above:
        raise InputError(f"{flag} must be > {_num(above)}; got {_num(value)}")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise InputError(f"{flag} must lie in [{_num(lo)}, {_num(hi)}]; got {_num(value)}")
    if lo is not None and value < lo:
        raise InputError(f"{flag} must be >= {_num(lo)}; got {_num(value)}")
    if hi is not None and value > hi:
        raise InputError(f"{flag} must be <= {_num(hi)}; got {_num(value)}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every command's settings: range checks and the run-folder record."""

    command: ClassVar[str] = ""
    example: ClassVar[str] = ""  # shown at the end of the command's --help

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        self._check()

    def _check(self) -> None:
        """Checks that involve several fields, and normalisation of spec strings (subclasses)."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen field in __post_init__

    def record(self) -> dict:
        """The settings that determine a result, as run.json and summary.json record them."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata["record"]}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes` (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, settings: "Settings | None" = None, **options: Any):
        """`settings`, or the defaults, with `options` applied: what a run layer was given."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            valid = ", ".join(f.name for f in dataclasses.fields(cls))
            raise InputError(f"{cls.__name__} has no option {', '.join(unknown)}; valid options: {valid}")
        if settings is not None and not isinstance(settings, cls):
            raise InputError(f"expected {cls.__name__}, got {type(settings).__name__}")
        return dataclasses.replace(settings, **options) if settings is not None else cls(**options)


def _spec(value: Any) -> Any:
    """A site spec as one string: a list of site names joined by commas (None and strings kept)."""
    return value if value is None or isinstance(value, str) else ",".join(value)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ----------------------------------------------------------------------------- shared fields
# Options several commands share. Factories, not shared objects: dataclasses bind a field to
# one class.
def _split(default: str | None = "test") -> Any:
    text = "which part of the data set: train, val, test (a stratified 70/10/20 split) or all"
    if default is None:  # chosen by the data: a user's file is used whole
        text += " (default: test of a built-in data set, all of a file or of data in memory)"
    return option(default, text, choices=SPLITS)


def _text_column() -> Any:
    return option(None, "the text column of a .csv/.jsonl file or a table in memory (default: text)",
                  metavar="NAME")


def _label_column() -> Any:
    return option(None, "the label column of a .csv/.jsonl file or a table in memory (default: label where there "
                        "is one; without labels the run reports no accuracy)", metavar="NAME")


MAX_FORWARDS = 1e9  # a sweep larger than this (days on one accelerator) needs `yes`
SEED_MAX = 2**32 - 1  # PRNG keys hold 32-bit seeds: a larger or negative seed would collide with another


def _seed(help: str) -> Any:
    return option(0, f"{help} (0 to {SEED_MAX}: each seed its own stream)", minimum=0, maximum=SEED_MAX)


def _split_seed() -> Any:
    return _seed("seed of the train/val/test split")


def _max_length() -> Any:
    return option(None, "text inputs are truncated to this many tokens (default: the model's own limit, its "
                        "position embeddings or tokenizer's, at most 512; inputs cut are counted)", minimum=1,
                  metavar="TOKENS")


def _dtype() -> Any:
    return option("float32", "precision: bfloat16 parameters and activations (softmax, norm statistics and logits "
                             "in float32) for accelerators; float32 on CPU, where bf16 GEMMs are slower",
                  choices=DTYPES)


def _labels() -> Any:
    return option(None, "read a causal LM as a classifier through label tokens: one word per class, "
                        "comma-separated, each one token (BPE words keep their leading space: ' negative, positive')",
                  metavar="WORDS")


def _prompt() -> Any:
    return option(None, "with --labels: the template, {text} = the input, ending right before the label word "
                        "(default '{text}')", metavar="TEMPLATE")


def _pad_multiple() -> Any:
    return option(PAD_MULTIPLE, "inputs run at their own length rounded up to a multiple of this many tokens "
                                "(larger: fewer compiled shapes, more padding)", minimum=1, metavar="TOKENS")


def _model_parallel() -> Any:
    return option(1, "split the model's big matrices over N devices (tensor parallel, for models bigger than one "
                     "device); the sweep is spread over device count / N replicas", minimum=1, metavar="N")


# ----------------------------------------------------------------------------- commands
@dataclasses.dataclass(frozen=True)
class FinetuneSettings(Settings):
    """`apex-jax finetune`: fine-tune a pretrained model (or train a ViT preset from scratch)."""

    command: ClassVar[str] = "finetune"
    example: ClassVar[str] = "apex-jax finetune minilm --data vader-movies --out runs/ft --epochs 1"

    mode: str = option("full", "train every parameter (full) or only the classifier head (head)",
                       choices=("full", "head"))
    lr: float | None = option(None, "peak learning rate (default: 5e-5 for full, 1e-3 for head or from scratch)",
                              above=0.0)
    batch_size: int = option(32, "examples per optimizer step", minimum=1)
    epochs: int = option(3, "most epochs (early stopping on the validation split)", minimum=1)
    patience: int = option(1, "epochs without a better validation accuracy before stopping", minimum=0)
    max_length: int | None = _max_length()
    seed: int = _seed("seed of the head's initialisation and of the batch order")
    split_seed: int = _split_seed()
    n_train: int | None = option(None, "use only the first N training examples (default: the whole train split)",
                                 minimum=1, metavar="N")
    n_val: int | None = option(None, "validation examples of early stopping, the first N of the val split (default: "
                                     "all of it; with --n-train, at most max(256, n-train))", minimum=1, metavar="N")
    n_test: int | None = option(None, "held-out test examples scored at the end, the first N of the test split "
                                      "(default: all of it; with --n-train, at most max(256, n-train))",
                                minimum=1, metavar="N")
    keep_duplicates: bool = option(False, "keep val/test examples whose text also occurs in the training part "
                                          "(default: they are left out, and the run says how many: they would be "
                                          "scored as unseen)")


@dataclasses.dataclass(frozen=True)
class ApexSettings(Settings):
    """`apex-jax apex`: APEX noise sweep — consistency, escape σ, transitions, large-σ bias."""

    command: ClassVar[str] = "apex"
    example: ClassVar[str] = ("apex-jax apex runs/demo/finetune/model --data vader-movies --out runs/apex "
                              "--n 32 --sigmas 0.05,0.2,1,4 --draws 32")

    split: str | None = _split(None)
    split_seed: int = _split_seed()
    n: int | None = option(None, "inputs: the first N of the split (default: all of it)", minimum=1, metavar="N")
    text_column: str | None = _text_column()
    label_column: str | None = _label_column()
    sigmas: tuple = option("logspace:0.01:4:16", "the σ grid: logspace:LO:HI:N or a list 0.1,0.5,1",
                           metavar="SPEC")
    draws: int = option(64, "noise draws per input and σ", minimum=1, maximum=2**24)
    sites: str = option("resid_post", "a site spec: presets resid_post, embed, mlp_post, all; layer numbers 0,3; "
                                      "a range like 2-4:hook_resid_post; or site names (comma-separated)",
                        metavar="SPEC")
    absolute: bool = option(False, "σ is an absolute standard deviation (default: σ × each site's noise unit)")
    noise_unit: str = option("site-rms", "the unit of relative σ: site-rms (each site's RMS over all dimensions), "
                                         "dim-rms (each dimension's own RMS over the real tokens) or median-abs (each "
                                         "site's median |activation|: use it for decoder LMs, whose few massive "
                                         "residual dimensions dominate the RMS)",
                             choices=("site-rms", "dim-rms", "median-abs"))
    threshold: float = option(0.5, "an input escapes when the share of draws keeping its clean prediction falls "
                                   "below this", above=0.0, maximum=1.0)
    seed: int = _seed("seed of the noise (every draw is determined by seed, input id, σ and draw index)")
    chunk_size: int | None = option(None, "sweep units per compiled call (default: chosen from a memory budget; "
                                          "results do not depend on it)", minimum=1, record=False)
    pad_multiple: int = _pad_multiple()
    max_length: int | None = _max_length()
    dtype: str = _dtype()
    model_parallel: int = _model_parallel()
    labels: str | None = _labels()
    prompt: str | None = _prompt()
    vocab_classes: bool = option(False, "read a causal LM without --labels as a classifier over its whole vocabulary "
                                        "(the next token; refused without this flag)")
    yes: bool = option(False, f"run a sweep of more than {MAX_FORWARDS:.0e} perturbed forwards (refused without "
                              "it: usually a typo in --draws or --sigmas)", record=False)

    def _check(self) -> None:
        grid = parse_sigmas(self.sigmas) if isinstance(self.sigmas, str) else check_sigmas(self.sigmas)
        self._set("sigmas", tuple(float(x) for x in grid))
        self._set("sites", _spec(self.sites))
        if self.absolute and self.noise_unit != "site-rms":
            raise InputError(f"--noise-unit {self.noise_unit} scales relative σ, but --absolute makes σ an absolute "
                             "standard deviation; drop one of them")


@dataclasses.dataclass(frozen=True)
class ProbeSettings(Settings):
    """`apex-jax probe`: SYNAPSE per-layer [CLS] probes (Optax), neuron rankings."""

    command: ClassVar[str] = "probe"
    example: ClassVar[str] = ("apex-jax probe runs/demo/finetune/model --data vader-movies --out runs/probe "
                              "--n-train 1000 --n 300")

    n_train: int | None = option(None, "training-split inputs the probes fit (default: the first 2000, or the "
                                       "whole split when smaller; a larger N than the split is refused)",
                                 minimum=1, metavar="N")
    n: int | None = option(None, "test-split inputs the probes are scored on (default: the first 500, or the whole "
                                 "split when smaller)", minimum=1, metavar="N")
    layers: str = option("all", "a site spec: all (embed + every block), blocks, layer numbers 0,3,5, ranges, "
                                "site names (a model without a classifier head is probed at its blocks only)",
                         metavar="SPEC")
    l1: float = option(1e-3, "elastic-net L1 weight", minimum=0.0)
    l2: float = option(1e-3, "elastic-net L2 weight", minimum=0.0)
    steps: int = option(400, "full-batch optimizer steps per probe", minimum=1)
    split_seed: int = _split_seed()
    max_length: int | None = _max_length()
    dtype: str = _dtype()
    labels: str | None = _labels()
    prompt: str | None = _prompt()

    def _check(self) -> None:
        self._set("layers", _spec(self.layers))


@dataclasses.dataclass(frozen=True)
class SilenceSettings(Settings):
    """`apex-jax silence`: SYNAPSE silencing of top/bottom/random k% [CLS] neurons per layer."""

    command: ClassVar[str] = "silence"
    example: ClassVar[str] = ("apex-jax silence runs/demo/finetune/model --data vader-movies --probe runs/probe "
                              "--out runs/silence --k 5,10,20,50")

    split: str = _split()
    n: int | None = option(None, "inputs evaluated: the first N of the split (default: up to 200, or the whole "
                                 "split when smaller)", minimum=1, metavar="N")
    k: tuple = option("synapse", "'synapse' (the 18 reference levels) or a list of percentages like 5,10,20",
                      metavar="SPEC")
    random: int = option(20, "random masks per k (the control; at least 2)", minimum=2)
    layers: str | None = option(None, "a site spec (0,3,5 / blocks / site names; default: every probed site)",
                                metavar="SPEC")
    positions: str = option("cls", "silence the classifier token only (cls) or every position (all)",
                            choices=("cls", "all"))
    mode: str = option("zero", "how neurons are silenced: zeroed, set to their mean over the probe's training "
                               "inputs, or noised", choices=("zero", "mean", "noise"))
    sigma: float = option(1.0, "noise mode: standard deviation × the token's RMS", above=0.0)
    draws: int = option(16, "noise mode: draws per input and mask", minimum=1, maximum=2**24)
    asymmetry_k: float = option(10.0, "the k (%) of the class-asymmetry matrix (the middle level when not among "
                                      "the k levels)", above=0.0, maximum=100.0)
    joint: bool = option(False, "silence all the layers at once (each with its own ranking)")
    per_class: bool = option(True, "also silence each class's own top-k% and report the class-asymmetry matrix")
    controls: str = option("attribution", "controls beside the random k% (always) and the bottom-k%: attribution "
                                          "(top-k% by activation × gradient, a positive control), mean (every ranked "
                                          "and random mask also mean-ablated at the probe's training mean, ~2x the "
                                          "sweep; mode zero), both as attribution,mean, or none", metavar="LIST")
    seed: int = _seed("seed of the random masks and of the noise")
    split_seed: int = _split_seed()
    max_length: int | None = _max_length()
    pad_multiple: int = _pad_multiple()
    dtype: str = _dtype()
    model_parallel: int = _model_parallel()
    labels: str | None = _labels()
    prompt: str | None = _prompt()
    yes: bool = option(False, f"run a silencing of more than {MAX_FORWARDS:.0e} forwards (refused without it: usually "
                              "a typo in --random, --draws or --k)", record=False)

    def _check(self) -> None:
        levels = parse_k(self.k) if isinstance(self.k, str) else check_k(self.k)
        self._set("k", tuple(float(x) for x in levels))
        items = {c.strip() for c in str(self.controls).split(",") if c.strip()}
        if not items or items - {"attribution", "mean", "none"} or ("none" in items and len(items) > 1):
            raise InputError(f"--controls must be a comma list of attribution, mean (or 'none' alone); "
                             f"got {self.controls!r}")
        self._set("controls", ",".join(sorted(items)))
        self._set("layers", _spec(self.layers))

    @property
    def control_set(self) -> set[str]:
        """The positive controls chosen ({"attribution", "mean"} or a part of it)."""
        return set(self.controls.split(",")) - {"none"}

    @property
    def asymmetry_level(self) -> float:
        """The k of the asymmetry matrix: `asymmetry_k` when it is a level, else the middle level."""
        return self.asymmetry_k if self.asymmetry_k in self.k else self.k[len(self.k) // 2]


@dataclasses.dataclass(frozen=True)
class AttackSettings(Settings):
    """`apex-jax attack`: SYNAPSE logit bias, weight push and bit flips toward a class."""

    command: ClassVar[str] = "attack"
    example: ClassVar[str] = ("apex-jax attack runs/demo/finetune/model --data vader-movies --probe runs/probe "
                              "--out runs/attack --target 1")

    split: str = _split()
    n: int | None = option(None, "inputs evaluated: the first N of the split (default: up to 200, or the whole "
                                 "split when smaller)", minimum=1, metavar="N")
    target: int = option(0, "the class the attacks push predictions toward (a class index of the model)",
                         metavar="C")
    k: float = option(10.0, "percent of the target's top neurons attacked", above=0.0, maximum=100.0)
    split_seed: int = _split_seed()
    max_length: int | None = _max_length()
    dtype: str = _dtype()
    labels: str | None = _labels()
    prompt: str | None = _prompt()


@dataclasses.dataclass(frozen=True)
class DemoSettings(Settings):
    """`apex-jax demo`: fine-tune MiniLM on vader-movies, then APEX and SYNAPSE on it."""

    command: ClassVar[str] = "demo"
    example: ClassVar[str] = "apex-jax demo --out runs/demo"

    # The fine-tuning budget keeps `make demo` within about 15 minutes on 2 CPU cores.
    epochs: int = option(1, "fine-tuning epochs", minimum=1)
    n_train: int | None = option(None, "fine-tune on the first N training examples (default: all)", minimum=1,
                                 metavar="N")
    max_length: int = option(64, "text inputs are truncated to this many tokens", minimum=1)
    n: int = option(32, "inputs of the APEX, silencing and attack runs", minimum=1, metavar="N")
    draws: int = option(32, "APEX noise draws per input and σ", minimum=1)
    probe_train: int = option(1000, "training inputs of the probes", minimum=1, metavar="N")
    probe_test: int = option(300, "test inputs of the probes", minimum=1, metavar="N")


# ----------------------------------------------------------------------------- argparse
def _arg_type(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str, "tuple": str}[base]


def add_options(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """Adds one option per field of `cls` to `parser` (help and default shown, ranges checked
    when the settings object is made)."""
    for f in dataclasses.fields(cls):
        m, flag = f.metadata, _flag(f.name)
        if f.type == "bool":  # on by default: --name / --no-name
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, help=m["help"].replace("%", "%%"))
            continue
        kw = {"type": _arg_type(f.type), "default": f.default, "help": m["help"].replace("%", "%%")}
        if m["choices"] is not None:  # shown as {a,b}; checked with the other ranges (exit 2, not argparse's usage)
            kw["metavar"] = "{" + ",".join(map(str, m["choices"])) + "}"
        if m["metavar"]:
            kw["metavar"] = m["metavar"]
        parser.add_argument(flag, **kw)


def from_args(cls: type[Settings], args: argparse.Namespace) -> Settings:
    """The settings object of a parsed command line."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _resolved_types() -> None:
    """Every field's annotation must be one argparse can read (checked at import)."""
    for cls in (FinetuneSettings, ApexSettings, ProbeSettings, SilenceSettings, AttackSettings, DemoSettings):
        for f in dataclasses.fields(cls):
            if f.type != "bool":
                _arg_type(f.type)


_resolved_types()
