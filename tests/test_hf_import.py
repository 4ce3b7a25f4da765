"""transformers' "PyTorch was not found" notice is silenced where apex-jax imports transformers
(tokenizers need no torch), and only that message, only there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIDE_TORCH = "import sys; sys.modules['torch'] = None; "  # transformers then finds no torch


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    return subprocess.run([sys.executable, "-c", HIDE_TORCH + code], env=env, capture_output=True, text=True,
                          timeout=300)


def test_no_torch_notice_when_apex_jax_loads_a_model():
    r = _python("import apex_jax; apex_jax.load('minilm'); "
                "import transformers; transformers.utils.logging.get_logger('transformers').warning('still-here')")
    assert r.returncode == 0, r.stderr
    assert "PyTorch was not found" not in r.stderr
    assert "still-here" in r.stderr  # transformers' other messages still come through


def test_the_notice_still_shows_for_a_plain_transformers_import():
    r = _python("import transformers")  # the control: torch is hidden, and only apex-jax silences it
    assert r.returncode == 0, r.stderr
    assert "PyTorch was not found" in r.stderr
