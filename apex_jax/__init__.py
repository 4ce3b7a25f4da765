"""apex-jax: probe transformer models by perturbing their hidden activations at scale."""

from apex_jax.interventions import Add, Noise, Replace, Scale, neuron_mask, silence
from apex_jax.models import Model, Output, Prefix, create, load

__version__ = "0.1.0"
__all__ = [
    "Add", "Model", "Noise", "Output", "Prefix", "Replace", "Scale", "create", "load",
    "neuron_mask", "silence",
]
