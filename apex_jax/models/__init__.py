"""Encoders and decoders as pure functions: configs, Flax modules, strict HF conversion, loading.

Modules:
  * `model`: `Model` (the runtime: `apply`, `prefix`, sites), `Output`, `Prefix`, `skeleton`.
  * `common`: parts every family shares (`Hooks`, activations, precision, the block runner).
  * `encoder`: BERT, MiniLM, RoBERTa, DistilBERT and ViT (config mapping, forward, weights).
  * `modernbert`: ModernBERT (config mapping, its own forward, weights).
  * `deberta`: DeBERTa v1, v2 and v3 (config mapping, forward, weights).
  * `decoder`: the decoder forward shared by `gpt2` and `llama` (Llama, Qwen2, Mistral), which
    hold their config mappings and weight tables.
  * `convert`: the strict walk of a weight table; `families`: dispatch over the families.
  * `loading` (`load`, `create`, `verbalizer`), `encoding` (`Model.encode`), `saving`
    (`Model.save`), `tf_weights`, `hf_import`, `presets`.
"""

from apex_jax.models.decoder import DecoderConfig, classifier_positions
from apex_jax.models.encoder import ArchConfig
from apex_jax.models.loading import create, load, verbalizer
from apex_jax.models.model import Model, Output, Prefix, skeleton
from apex_jax.models.presets import VIT_PRESETS, vit_hf_config

__all__ = [
    "ArchConfig", "DecoderConfig", "Model", "Output", "Prefix", "VIT_PRESETS", "classifier_positions", "create",
    "load", "skeleton", "verbalizer", "vit_hf_config",
]
