"""Encoders and decoders as pure functions: configs, Flax modules, strict HF conversion, loading."""

from apex_jax.models.config import ArchConfig
from apex_jax.models.decoder_config import DecoderConfig
from apex_jax.models.decoder import classifier_positions
from apex_jax.models.decoder_loading import verbalizer
from apex_jax.models.loading import create, load
from apex_jax.models.model import Model, Output, Prefix, skeleton

__all__ = ["ArchConfig", "classifier_positions", "DecoderConfig", "Model", "Output", "Prefix", "create", "load", "skeleton", "verbalizer"]
