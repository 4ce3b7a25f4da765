"""`Model`: a loaded encoder as a pure function plus its preprocessing.

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

import json
import os
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from apex_jax import interventions as iv_lib
from apex_jax import sites as site_lib
from apex_jax.models import convert
from apex_jax.models.config import ArchConfig
from apex_jax.models.decoder import Decoder, classifier_positions, hf_class_name, prepare_tokenizer
from apex_jax.models.encoder import Encoder, Hooks

Array = Any

HF_CLASS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "vit": "ViTForImageClassification",
}


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


_SKELETONS: dict = {}  # ArchConfig -> its parameter-free Model (see Model.skeleton)


class Model:
    """A loaded encoder or decoder: `config`, `params`, `sites`, `apply`, `prefix`, `encode`,
    `save`, `classifier_positions`."""

    def __init__(
        self,
        config: ArchConfig,
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
        self.module = Decoder(config) if config.is_decoder else Encoder(config)
        self.sites = site_lib.site_names(config.n_layers, config.n_classes is not None,
                                         final_norm=config.is_decoder)
        self._site_ids = {s: i for i, s in enumerate(self.sites)}
        self._jitted: dict = {}

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
        capture: Sequence[str] = (),
        head_only: bool = False,
    ) -> Output:
        """Runs the model; pure in (params, inputs, perturbations).

        Args:
            params: parameter tree (e.g. `model.params`).
            inputs: a batch from `encode` ({"input_ids", "attention_mask", ["token_type_ids"]}
                each [batch, pos], or {"pixel_values": [batch, channels, height, width]}), or a
                `Prefix` from `model.prefix` to run only the rest of the model.
            perturbations: {site: intervention or tuple of interventions}; absent = no-op.
            capture: site names whose activations (after interventions) to return.
            head_only: skip work only the discarded positions need (DESIGN principle 5): the
                last block computes queries, attention output and MLP for [CLS] only, so its
                sites after hook_k/hook_v have one position. Logits are unchanged; per-example
                (batched-key) noise at those sites equals the full run's [CLS] noise. Not for
                perturbing the last block's hook_pattern.

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
        """The parameter-free model shared by every model of this architecture (equal `config`).

        `apply` depends on the architecture only (parameters are an argument), so compiled
        functions are cached on the skeleton rather than on each loaded model: a second
        checkpoint of the same architecture (another fine-tune, a zoo member) reuses them
        instead of compiling again, and caches do not keep any model's parameters alive.
        """
        sk = _SKELETONS.get(self.config)
        if sk is None:
            sk = _SKELETONS[self.config] = Model(self.config, None, {}, source="skeleton")
        return sk

    def jitted(self, capture: Sequence[str] = ()):
        """`jax.jit` of `apply` for one capture set, compiled once per architecture:
        `fn(params, inputs, perturbations=None) -> Output`."""
        capture = tuple(capture)
        sk = self.skeleton
        fn = sk._jitted.get(capture)
        if fn is None:
            fn = jax.jit(lambda p, x, pert=None: sk.apply(p, x, pert, capture=capture))
            sk._jitted[capture] = fn
        return fn

    def forward(self, inputs: Any, perturbations=None, *, capture: Sequence[str] = ()) -> Output:
        """`apply` with `self.params`, jit-compiled (convenience)."""
        return self.jitted(capture)(self.params, inputs, perturbations)

    def _hooks(self, perturbations, capture, start: int) -> Hooks:
        perturbations = iv_lib.validate(perturbations, self.sites)
        capture = tuple(capture)
        self._check_sites(capture, "capture")
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
            raise ValueError(f"inputs lack {missing}; a {self.config.arch} model needs {list(need)}.")
        if self.config.is_text:
            shape = np.shape(inputs["input_ids"])
            if len(shape) != 2:
                raise ValueError(f"input_ids must be [batch, pos]; got shape {shape}.")
            for k in ("attention_mask", "token_type_ids"):
                if k in inputs and np.shape(inputs[k]) != shape:
                    raise ValueError(f"{k} has shape {np.shape(inputs[k])}; input_ids have {shape}.")
            limit = self.config.max_positions
            if self.config.is_decoder and self.config.positions == "rope":
                limit = max(limit, shape[1])  # rotary positions have no table to run out of
            if self.config.arch == "roberta":  # positions run pad_token_id + 1 .. pad_token_id + n
                limit -= self.config.pad_token_id + 1
            if shape[1] > limit:
                raise ValueError(
                    f"sequence length {shape[1]} exceeds the {limit} positions this model has "
                    f"(max_position_embeddings {self.config.max_positions})."
                )
            keep = ("input_ids", "attention_mask", "token_type_ids")
        else:
            c, s = self.config.num_channels, self.config.image_size
            shape = np.shape(inputs["pixel_values"])
            if len(shape) != 4 or tuple(shape[1:]) != (c, s, s):
                raise ValueError(
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
        """Texts -> token arrays (padded to the longest), or images -> normalized pixel_values.

        Images: [n, height, width] or [n, channels, height, width], uint8 (0-255) or float
        in [0, 1]; they are normalized with the model's image mean/std.
        """
        if self.config.is_text:
            if isinstance(items, str):
                items = [items]
            if self.tokenizer is None:
                raise ValueError(f"{self.source!r} has no tokenizer files; pass token arrays to apply().")
            if self.config.is_decoder:  # right padding, eos as pad when there is no pad token
                prepare_tokenizer(self.tokenizer)
                if self.config.prompt:  # a verbalizer's template: the label token comes next
                    items = [self.config.prompt.replace("{text}", t) for t in items]
            if len(items) == 0:
                raise ValueError("encode() got no texts.")
            limit = min(self.config.max_positions - (2 if self.config.arch == "roberta" else 0), 512)
            enc = self.tokenizer(
                list(items), padding=True, truncation=True,
                max_length=min(max_length or limit, limit), pad_to_multiple_of=pad_to_multiple_of,
                return_tensors="np",
            )
            keep = ["input_ids", "attention_mask"] + (["token_type_ids"] if self.config.type_vocab_size else [])
            return {k: np.asarray(enc[k], np.int32) for k in keep if k in enc}
        x = np.asarray(items)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(f"images must be [n, height, width] or [n, channels, height, width]; got {x.shape}.")
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        mean = np.asarray(self.image_mean, np.float32)[None, :, None, None]
        std = np.asarray(self.image_std, np.float32)[None, :, None, None]
        return {"pixel_values": (x - mean) / std}

    # ------------------------------------------------------------------------------ saving
    def replace(self, params: Any) -> "Model":
        """The same model with other parameters (e.g. after training)."""
        return Model(self.config, params, self.hf_config, self.tokenizer, self.image_mean,
                     self.image_std, self.label_names, self.source)

    def save(self, path: str | os.PathLike, params: Any = None) -> Path:
        """Writes an HF folder (config.json, model.safetensors, tokenizer) that `transformers` loads."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = jax.device_get(self.params if params is None else params)
        state = convert.from_params(self.config, params)
        cfg = dict(self.hf_config)
        cfg.pop("_name_or_path", None)
        if self.config.is_decoder:
            cfg["architectures"] = [hf_class_name(self.config)]
            if self.config.n_classes is not None and not self.config.lm_head:
                cfg["num_labels"] = self.config.n_classes
                cfg["id2label"] = {str(i): n for i, n in enumerate(self.label_names)}
                cfg["label2id"] = {n: i for i, n in enumerate(self.label_names)}
                if cfg.get("pad_token_id") is None:  # HF's score reader needs one to find the last token
                    cfg["pad_token_id"] = self.config.eos_token_id
        elif self.config.n_classes is not None:
            cfg["architectures"] = [HF_CLASS[self.config.arch]]
            cfg["num_labels"] = self.config.n_classes
            cfg["id2label"] = {str(i): n for i, n in enumerate(self.label_names)}
            cfg["label2id"] = {n: i for i, n in enumerate(self.label_names)}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path))
        if not self.config.is_text:
            pre = {
                "image_processor_type": "ViTImageProcessor", "do_resize": False,
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": list(self.image_mean), "image_std": list(self.image_std),
            }
            (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
        return path
