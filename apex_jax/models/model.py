"""`Model`: a loaded encoder or decoder as a pure function plus its preprocessing (the runtime).

    model = apex_jax.load("minilm", num_labels=2)
    batch = model.encode(["a fine film", "a dull film"])      # numpy arrays
    out = model.apply(model.params, batch, {"blocks.2.hook_resid_post": Noise(key, 0.1)},
                      capture=("blocks.2.hook_resid_post",))
    out.logits                                                 # [batch, n_classes]
    out.captured["blocks.2.hook_resid_post"]                   # [batch, pos, d_model]

`apply` is pure (params, inputs, perturbations) -> Output: wrap it in `jax.jit` (with
`static_argnames="capture"`), `jax.vmap` it over perturbation leaves, differentiate it.

Segmented execution (prefix caching): `prefix = model.prefix(params, batch, until=sites)` runs
everything before the first block any of `sites` needs, once; `model.apply(params, prefix, p)`
runs the rest and equals the full forward with the same perturbation.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from apex_jax import interventions as iv_lib
from apex_jax import sites as site_lib
from apex_jax.errors import InputError
from apex_jax.models import encoding, families, saving
from apex_jax.models.common import Hooks
from apex_jax.models.decoder import DecoderConfig, classifier_positions
from apex_jax.models.encoder import ArchConfig

Array = Any


class Output(NamedTuple):
    """Result of `Model.apply`."""

    logits: Array | None  # [batch, n_classes]; None for a model without a head
    captured: dict  # {site: activation after its interventions}


@struct.dataclass
class Prefix:
    """Cached activations of a segmented run: the residual stream entering block `start`."""

    hidden: Array  # [batch, pos, d_model], before the boundary site's interventions
    mask: Array | None  # [batch, pos] attention mask (None for ViT)
    start: int = struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnames=("config", "capture", "head_only"))
def jit_apply(
    config: ArchConfig | DecoderConfig,
    params: Any,
    inputs: Any,
    perturbations: iv_lib.Perturbations | None = None,
    *,
    capture: tuple[str, ...] = (),
    head_only: bool = False,
) -> Output:
    """`Model.apply` as one module-level jitted function with the architecture static.

    Everything that varies between calls (parameters, inputs, perturbation leaves) is an array
    argument, so JAX's own jit cache is the only cache: any model of the same `config` (another
    checkpoint, other weights) and any inputs of the same shapes reuse one compilation, and no
    parameters are kept alive by it.

    Args:
        config: the architecture (hashable, static).
        params, inputs, perturbations, capture, head_only: as in `Model.apply` (capture a tuple).
    """
    return skeleton(config).apply(params, inputs, perturbations, capture=capture, head_only=head_only)


@functools.lru_cache(maxsize=32)
def skeleton(config: ArchConfig | DecoderConfig) -> "Model":
    """The parameter-free Model of an architecture (validation and module definition only, no
    arrays): what a jitted function with the config static calls `apply` on."""
    return Model(config, None, {}, source="skeleton")


class Model:
    """A loaded encoder or decoder: `config`, `params`, `sites`, `apply`, `prefix`, `encode`,
    `save`, `classifier_positions`."""

    def __init__(
        self,
        config: ArchConfig | DecoderConfig,
        params: Any,
        hf_config: dict,
        tokenizer: Any = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        label_names: Sequence[str] | None = None,
        source: str = "",
    ):
        self.config = config
        self.params = params
        self.hf_config = dict(hf_config)
        self.tokenizer = tokenizer
        self.image_mean = tuple(image_mean or [0.5] * max(config.num_channels, 1))
        self.image_std = tuple(image_std or [0.5] * max(config.num_channels, 1))
        n = config.n_classes or 0
        self.label_names = tuple(label_names) if label_names else tuple(f"LABEL_{i}" for i in range(n))
        self.source = source
        self.module = families.module(config)
        self.sites = site_lib.site_names(config.n_layers, config.n_classes is not None,
                                         final_norm=config.is_decoder)
        self._site_ids = {s: i for i, s in enumerate(self.sites)}

    def __repr__(self) -> str:
        c = self.config
        head = f"{c.n_classes} classes" if c.n_classes else "no head"
        return f"Model({c.arch}, {c.n_layers} layers, d_model={c.d_model}, {head}, from {self.source!r})"

    # ----------------------------------------------------------------------------- running
    def apply(
        self,
        params: Any,
        inputs: Any,
        perturbations: iv_lib.Perturbations | None = None,
        *,
        capture: str | Sequence[str] | None = (),
        head_only: bool = False,
    ) -> Output:
        """Runs the model; pure in (params, inputs, perturbations).

        Args:
            params: parameter tree (e.g. `model.params`).
            inputs: a batch from `encode` ({"input_ids", "attention_mask", ["token_type_ids"]}
                each [batch, pos], or {"pixel_values": [batch, channels, height, width]}), or a
                `Prefix` from `model.prefix` to run only the rest of the model.
            perturbations: {site: intervention or tuple of interventions}; absent = no-op.
            capture: the sites whose activations (after interventions) to return: a sequence of
                site names, one site spec string (`apex_jax.sites.parse_sites`: a site name,
                "all" = hook_embed and every block's output, "resid_post", "0,3", ...), or
                None / () for none.
            head_only: skip work only the discarded positions need: the last block computes
                queries, attention output and MLP for [CLS] only, so its sites after
                hook_k/hook_v have one position. Logits are unchanged; per-example (batched-key)
                noise at those sites equals the full run's [CLS] noise. Not for perturbing the
                last block's hook_pattern.

        Returns:
            Output(logits [batch, n_classes] or None, captured {site: array}).
        """
        start = inputs.start if isinstance(inputs, Prefix) else 0
        hooks = self._hooks(perturbations, capture, start)
        if isinstance(inputs, Prefix):
            args = (inputs.hidden, inputs.mask)
        else:
            args = self._check_inputs(inputs)
        if head_only and f"blocks.{self.config.n_layers - 1}.attn.hook_pattern" in hooks.perturbations:
            raise ValueError("head_only=True cannot perturb the last block's attn.hook_pattern; use head_only=False.")
        _, _, logits = self.module.apply({"params": params}, args, hooks, start=start, head_only=head_only)
        return Output(logits, hooks.captured)

    def prefix(
        self,
        params: Any,
        inputs: Any,
        until: str | Iterable[str],
        perturbations: iv_lib.Perturbations | None = None,
    ) -> Prefix:
        """Runs the part of the model before the first block that `until` (site names) needs.

        `perturbations` may only touch sites inside the prefix (they are then shared by every
        suffix run).
        """
        start = self.resume_block(until)
        hooks = self._hooks(perturbations, (), 0)
        late = [s for s in hooks.perturbations if site_lib.resume_block(s, self.config.n_layers) >= start]
        if late:
            raise ValueError(
                f"perturbations at {late} lie after the prefix boundary (block {start}); pass them "
                "to apply() instead."
            )
        hidden, mask, _ = self.module.apply(
            {"params": params}, self._check_inputs(inputs), hooks, start=0, stop=start
        )
        return Prefix(hidden, mask, start)

    def classifier_positions(self, inputs: Any) -> Array:
        """The token position the classifier reads, per example: [batch] int32.

        0 ([CLS]) for encoders; the last real token (rightmost `attention_mask` 1, for left or
        right padding) for decoders. `inputs` is a batch from `encode` or a `Prefix`.
        """
        if isinstance(inputs, Prefix):
            mask, n = inputs.mask, inputs.hidden.shape[0]
        else:
            mask = inputs.get("attention_mask")
            n = np.shape(inputs["input_ids" if self.config.is_text else "pixel_values"])[0]
        if not self.config.is_decoder:
            return jnp.zeros((n,), jnp.int32)
        return classifier_positions(jnp.asarray(mask))

    def resume_block(self, sites: str | Iterable[str]) -> int:
        """The first block a suffix run needs so that every one of `sites` is inside it."""
        sites = [sites] if isinstance(sites, str) else list(sites)
        self._check_sites(sites, "until")
        n = self.config.n_layers
        return min((site_lib.resume_block(s, n) for s in sites), default=n)

    @property
    def skeleton(self) -> "Model":
        """The parameter-free model of this architecture (equal `config` -> the same object).

        Kept for code that builds its own jitted closures over a model and caches them per
        architecture; new code should pass the config as a static argument instead (see
        `jit_apply`), which needs no object identity at all.
        """
        return skeleton(self.config)

    def jitted(self, capture: str | Sequence[str] | None = ()):
        """`apply` under `jax.jit` for one capture set (as in `apply`): `fn(params, inputs,
        perturbations=None) -> Output`. A thin wrapper of `jit_apply`: compiled once per
        (architecture, capture, input shapes), shared by every model of the architecture, no
        cache of ours."""
        config, capture = self.config, self.capture_sites(capture)

        def fn(params: Any, inputs: Any, perturbations: iv_lib.Perturbations | None = None) -> Output:
            # always the same call signature: one jit cache entry per shapes, not per call style
            return jit_apply(config, params, inputs, perturbations, capture=capture)

        return fn

    def forward(self, inputs: Any, perturbations=None, *, capture: str | Sequence[str] | None = ()) -> Output:
        """`apply` with `self.params`, jit-compiled (convenience)."""
        return self.jitted(capture)(self.params, inputs, perturbations)

    def capture_sites(self, capture: str | Sequence[str] | None) -> tuple[str, ...]:
        """The site names a `capture` argument selects: None or () -> none; a string is one site
        spec (never iterated character by character: "all" is a preset, not 'a', 'l', 'l');
        a sequence is site names, each checked.

        Raises:
            ValueError: an unknown site or preset (the message lists the valid ones).
        """
        if capture is None:
            return ()
        if isinstance(capture, str):
            return tuple(site_lib.parse_sites(self.sites, capture))
        names = tuple(capture)
        bad = [c for c in names if not isinstance(c, str)]
        if bad:
            raise TypeError(f"capture: site names must be strings; got {bad!r} (give a site spec string or a "
                            "sequence of site names, e.g. capture='all' or capture=['blocks.0.hook_resid_post']).")
        self._check_sites(names, "capture")
        return names

    def _hooks(self, perturbations, capture, start: int) -> Hooks:
        perturbations = iv_lib.validate(perturbations, self.sites)
        capture = self.capture_sites(capture)
        if start:
            n = self.config.n_layers
            early = [s for s in (*perturbations, *capture) if site_lib.resume_block(s, n) < start]
            if early:
                raise ValueError(
                    f"sites {early} lie before the cached prefix (it starts at block {start}); "
                    "build the prefix with until= covering them."
                )
        return Hooks(perturbations, frozenset(capture), self._site_ids)

    def _check_sites(self, names: Iterable[str], what: str) -> None:
        unknown = [s for s in names if s not in self._site_ids]
        if unknown:
            raise ValueError(
                f"{what}: unknown site(s) {unknown}; valid sites: {site_lib.describe(self.sites)}."
            )

    def _check_inputs(self, inputs: Any) -> dict:
        if not hasattr(inputs, "keys"):
            raise TypeError(f"inputs must be a dict from model.encode(...) or a Prefix; got {type(inputs).__name__}.")
        need = ("input_ids", "attention_mask") if self.config.is_text else ("pixel_values",)
        missing = [k for k in need if k not in inputs]
        if missing:
            raise InputError(f"inputs lack {missing}; a {self.config.arch} model needs {list(need)}.")
        if self.config.is_text:
            shape = np.shape(inputs["input_ids"])
            if len(shape) != 2:
                raise InputError(f"input_ids must be [batch, pos]; got shape {shape}.")
            for k in ("attention_mask", "token_type_ids"):
                if k in inputs and np.shape(inputs[k]) != shape:
                    raise InputError(f"{k} has shape {np.shape(inputs[k])}; input_ids have {shape}.")
            limit = self.config.max_positions
            if self.config.is_decoder and self.config.positions == "rope":
                limit = max(limit, shape[1])  # rotary positions have no table to run out of
            if self.config.arch == "roberta":  # positions run pad_token_id + 1 .. pad_token_id + n
                limit -= self.config.pad_token_id + 1
            if shape[1] > limit:
                raise InputError(
                    f"sequence length {shape[1]} exceeds the {limit} positions this model has "
                    f"(max_position_embeddings {self.config.max_positions})."
                )
            keep = ("input_ids", "attention_mask", "token_type_ids")
        else:
            c, s = self.config.num_channels, self.config.image_size
            shape = np.shape(inputs["pixel_values"])
            if len(shape) != 4 or tuple(shape[1:]) != (c, s, s):
                raise InputError(
                    f"pixel_values have shape {tuple(shape)}; this model expects "
                    f"[batch, {c}, {s}, {s}] (channels first, normalized; see model.encode)."
                )
            keep = ("pixel_values",)
        return {k: inputs[k] for k in keep if k in inputs}

    # ---------------------------------------------------------------------- preprocessing
    def encode(
        self, items: Sequence[str] | np.ndarray, *, max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Texts -> token arrays (padded to the longest), or images -> normalized pixel_values:
        `apex_jax.models.encoding.encode` (its docstring has the details)."""
        return encoding.encode(self, items, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of)

    # ------------------------------------------------------------------------------ saving
    def replace(self, params: Any) -> "Model":
        """The same model with other parameters (e.g. after training)."""
        return Model(self.config, params, self.hf_config, self.tokenizer, self.image_mean,
                     self.image_std, self.label_names, self.source)

    def save(self, path: str | os.PathLike, params: Any = None) -> Path:
        """Writes an HF folder (config.json, model.safetensors, tokenizer) that `transformers` loads.

        Files of `path` that the folder does not hold are left alone; the ones it holds are
        replaced whole (atomic renames), so an interrupted save leaves no truncated file. See
        `apex_jax.models.saving.save`; `params` replaces `self.params` (e.g. after training).
        """
        return saving.save(self, path, params)
