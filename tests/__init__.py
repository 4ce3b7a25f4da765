"""apex-jax tests (mirroring the package: tests/apex, tests/synapse; shared helpers in tests/helpers)."""
