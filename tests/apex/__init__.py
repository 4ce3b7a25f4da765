"""Tests of apex_jax.apex."""
