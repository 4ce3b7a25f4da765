"""JAX's persistent compilation cache under the apex-jax cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import jax

from apex_jax.assets import cache_dir


def default_cache_dir() -> Path:
    """`$APEX_JAX_CACHE/jax-compile-cache` (the asset cache folder, default ~/.cache/apex-jax)."""
    return cache_dir() / "jax-compile-cache"


def enable_compile_cache(path: str | os.PathLike | None = None, min_compile_seconds: float = 0.5) -> Path:
    """Turns on JAX's persistent compilation cache, so a rerun on the same model and shapes
    loads its executables instead of compiling them. Call it once, before the first compile
    (it is never called at import).

    Args:
        path: the cache folder (default `default_cache_dir()`); created if missing.
        min_compile_seconds: only executables that took at least this long to compile are
            written (small ones compile faster than they load).

    Returns:
        The cache folder.
    """
    folder = Path(path) if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
