"""Tests of apex_jax.synapse."""
