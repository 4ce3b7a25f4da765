"""Dispatch over the model families: which family module handles a config or a `model_type`.

A family module (`encoder`: BERT-like encoders and ViT; `bigbird`; `deberta`; `modernbert`;
`gpt2`; `llama`: Llama, Qwen2, Mistral; `neox`; `phi3`; `gemma`: Gemma 1, 2, 3 text) has
`MODEL_TYPES` (HF model_type -> our architecture), `BASE_PREFIX` (architecture -> the base
model's key prefix), `from_hf`, `key_renames`, `table` and `hf_class_name`; encoder families also
`load_head`, `with_head` and `init_params`, and a family with its own forward `module` (`module`
here picks it). This module reads those, and the strict table walk of `convert`, for the loader
(`loading`) and the writer (`saving`); the family modules never import it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Iterable, Mapping

import numpy as np

from apex_jax.models import bigbird, convert, deberta, encoder, gemma, gpt2, llama, modernbert, neox, phi3
from apex_jax.models.deberta import DebertaConfig
from apex_jax.models.decoder import Decoder, DecoderConfig
from apex_jax.models.encoder import ArchConfig, Encoder

Config = ArchConfig | DecoderConfig | DebertaConfig
FAMILIES: tuple[ModuleType, ...] = (encoder, bigbird, deberta, modernbert, gpt2, llama, neox, phi3, gemma)
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.MODEL_TYPES}
_BY_ARCH = {a: f for f in FAMILIES for a in f.MODEL_TYPES.values()}


def family(cfg_or_arch: Config | str) -> ModuleType:
    """The family module of a config (or of an architecture name such as "vit", "gpt2")."""
    arch = cfg_or_arch if isinstance(cfg_or_arch, str) else cfg_or_arch.arch
    return _BY_ARCH[arch]


def from_hf(hf: Mapping[str, Any]) -> Config:
    """Builds an ArchConfig (encoders) or DecoderConfig (decoders) from an HF config dict (head
    fields are filled by the loader).

    Raises:
        ValueError: an unsupported model_type (the supported ones are listed), or an option
            the family does not compute.
        KeyError: a required entry of an encoder config is missing (decoders raise InputError).
    """
    model_type = hf.get("model_type")
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(_BY_MODEL_TYPE))}."
        )
    return _BY_MODEL_TYPE[model_type].from_hf(hf)


def module(cfg: Config) -> Any:
    """The Flax module that runs `cfg`'s forward: the family's own (`module(cfg)`, e.g.
    ModernBERT's) where it has one, else the shared `encoder.Encoder` / `decoder.Decoder`."""
    own = getattr(family(cfg), "module", None)
    if own is not None:
        return own(cfg)
    return Decoder(cfg) if cfg.is_decoder else Encoder(cfg)


def table(cfg: Config) -> list[convert.Entry]:
    """The full weight table of a model described by `cfg`."""
    return family(cfg).table(cfg)


def normalize_keys(arch: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strips the base-model prefix of `arch` and maps legacy spellings to current HF names."""
    fam = family(arch)
    return convert.normalize_keys(state, fam.BASE_PREFIX[arch], fam.key_renames(arch))


def to_params(cfg: Config, state: Mapping[str, Any], ignore: Iterable[str] = (),
              place: convert.Placer | None = None) -> dict:
    """HF state dict (already `normalize_keys`-ed) -> nested params dict in `cfg`'s dtype, one
    weight at a time (`convert.to_params`: `place` puts each on its device(s)).

    Raises:
        InputError: naming every missing, unused or mis-shaped weight (a ValueError).
    """
    return convert.to_params(table(cfg), state, ignore, what=cfg.arch, dtype=cfg.compute_dtype, place=place)


def from_params(cfg: Config, params: Mapping) -> dict[str, np.ndarray]:
    """Params tree -> HF state dict with the names of the model's transformers class."""
    return convert.from_params(table(cfg), params, family(cfg).BASE_PREFIX[cfg.arch])


def hf_class_name(cfg: Config) -> str:
    """The transformers class a saved folder declares (`architectures` in config.json)."""
    return family(cfg).hf_class_name(cfg)
