"""Pieces shared by every run's output files (APEX, SYNAPSE, reproduction): software versions
for summary.json and saving a matplotlib figure."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def versions() -> dict:
    """apex-jax, JAX and Flax versions, Python, devices and the machine (deterministic per machine)."""
    import flax
    import jax

    import apex_jax

    return {"apex_jax": apex_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "python": platform.python_version(), "devices": [str(d) for d in jax.devices()],
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"}


def save_figure(fig, path: Path) -> Path:
    """Writes a figure as PNG (tight layout, 110 dpi) and closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
