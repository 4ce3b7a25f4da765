"""A guard against the process's memory-map limit, which compiled XLA executables fill up.

XLA:CPU keeps every compiled executable mapped (a few maps for a small kernel, dozens for a
model's sweep kernel), and JAX's jit caches keep every executable alive for the process's
life. Linux stops a process at `vm.max_map_count` maps (65,530 by default); past it the next
compile cannot map its code and the process dies with a segfault inside XLA — losing whatever
the process had not yet saved. A long session that sweeps many models or site sets (a notebook,
a study script, a test suite) reaches it: 38,000 maps after the first half of this project's
test suite. `release_if_near_limit` turns that crash into a warning and `jax.clear_caches()`,
which unmaps every executable no live object refers to; later calls compile again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax

MAPS = Path("/proc/self/maps")
LIMIT = Path("/proc/sys/vm/max_map_count")
_after_last_clear: int | None = None  # maps held right after the last clear


def memory_maps() -> tuple[int, int] | None:
    """(maps this process holds, the kernel's per-process limit); None where the system does not
    say (not Linux)."""
    try:
        with MAPS.open("rb") as f:
            used = sum(1 for _ in f)
        return used, int(LIMIT.read_text())
    except (OSError, ValueError):
        return None


def release_if_near_limit(fraction: float = 0.8) -> bool:
    """Clears JAX's compilation caches, with a warning saying why, once the process holds more
    than `fraction` of its memory-map limit, and again only once compiles have used half the room
    the last clear left (the rest may be held by something else); returns whether it did. Cheap
    (one read of /proc/self/maps, ~30 ms at 40,000 maps): `run_sweep` calls it before it compiles.

    Example:
        >>> release_if_near_limit(fraction=1.0)  # a process below its limit keeps its caches
        False
    """
    global _after_last_clear
    counts = memory_maps()
    if counts is None or counts[0] <= fraction * counts[1]:
        return False
    used, limit = counts
    # maps held by something else (not JAX's executables) survive a clear: clear again only
    # once compiles have used half the room left after the last one, not before every sweep
    if _after_last_clear is not None and used <= (_after_last_clear + limit) / 2:
        return False
    jax.clear_caches()
    _after_last_clear = memory_maps()[0]
    warnings.warn(
        f"this process held {used} of its {limit} memory maps (vm.max_map_count): XLA keeps every "
        f"compiled executable mapped, and at the limit the next compile crashes the process. "
        f"Cleared JAX's compilation caches (jax.clear_caches()), which freed "
        f"{used - _after_last_clear} maps; later calls compile again. To keep the caches, raise the "
        f"limit (sysctl -w vm.max_map_count=1048576, as root) or run fewer models per process.",
        RuntimeWarning, stacklevel=2)
    return True
