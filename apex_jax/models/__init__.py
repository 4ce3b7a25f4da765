"""Encoders as pure functions: configs, Flax modules, strict HF conversion, loading."""

from apex_jax.models.config import ArchConfig
from apex_jax.models.loading import create, load
from apex_jax.models.model import Model, Output, Prefix

__all__ = ["ArchConfig", "Model", "Output", "Prefix", "create", "load"]
