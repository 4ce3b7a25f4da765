"""The apex-jax version (one definition: the package, `--version` and run folders read it)."""

__version__ = "0.1.0"
