"""The scripts (scripts/*.py and the reproduction study in scripts/reproduce/) use apex_jax's
public API only: names in the `__all__` of `apex_jax` or of its subpackages apex, synapse, data,
engine and models, plus the public modules `apex_jax.fileio` and `apex_jax.assets`."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import apex_jax

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").rglob("*.py"))
SUBPACKAGES = ("apex", "synapse", "data", "engine", "models")
PUBLIC_MODULES = ("fileio", "assets")


def _exports(package: str) -> set[str]:
    return set(importlib.import_module(package).__all__)


def _public_module_names(module: str) -> set[str]:
    return {n for n in vars(importlib.import_module(module)) if not n.startswith("_")}


def _public(module: str, name: str) -> bool:
    """Whether `from <module> import <name>` uses the public API."""
    if module == "apex_jax":
        return name in _exports("apex_jax") or name in PUBLIC_MODULES
    parts = module.split(".")
    if parts[0] != "apex_jax" or len(parts) != 2:
        return False
    if parts[1] in SUBPACKAGES:
        return name in _exports(module)
    if parts[1] in PUBLIC_MODULES:
        return name in _public_module_names(module)
    return False


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad, aliases = [], set()  # aliases: local names bound to the apex_jax package itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != "apex_jax":
                    continue
                if a.name == "apex_jax":
                    aliases.add(a.asname or "apex_jax")
                elif a.name not in {f"apex_jax.{m}" for m in PUBLIC_MODULES}:
                    bad.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "apex_jax":
                continue
            bad += [f"line {node.lineno}: from {node.module} import {a.name}"
                    for a in node.names if not _public(node.module, a.name)]
    for node in ast.walk(tree):  # apex_jax.X and apex_jax.<subpackage>.X
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr in SUBPACKAGES:
                continue  # checked as the inner attribute of the chain below
            if not _public("apex_jax", node.attr):
                bad.append(f"line {node.lineno}: apex_jax.{node.attr}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases
                and node.value.attr in SUBPACKAGES):
            if not _public(f"apex_jax.{node.value.attr}", node.attr):
                bad.append(f"line {node.lineno}: apex_jax.{node.value.attr}.{node.attr}")
    return sorted(bad, key=lambda v: int(v.split(":")[0].split()[1]))


def test_the_scripts_are_found():
    assert ROOT / "scripts" / "reproduce" / "__init__.py" in SCRIPTS and len(SCRIPTS) > 10


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_import_only_the_public_api(path):
    assert _violations(path) == [], f"{path.relative_to(ROOT)} uses apex_jax internals"


def test_the_rule_catches_internal_names(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("import apex_jax\nimport apex_jax.batching\nfrom apex_jax import batching, data, fileio, load\n"
                      "from apex_jax.synapse.rankings import top_k\nfrom apex_jax.synapse import top_k, rankings\n"
                      "from apex_jax.fileio import write_csv\n"
                      "apex_jax.load\napex_jax.training.train\napex_jax.synapse.plots\napex_jax.synapse.top_k\n")
    assert _violations(script) == [
        "line 2: import apex_jax.batching",
        "line 3: from apex_jax import batching", "line 3: from apex_jax import data",
        "line 4: from apex_jax.synapse.rankings import top_k", "line 5: from apex_jax.synapse import rankings",
        "line 8: apex_jax.training", "line 9: apex_jax.synapse.plots",
    ]


def test_a_claim_script_runs_from_the_repository_root():
    """`python scripts/<claim>.py` finds the study beside the script (sys.path[0] = scripts/);
    only this checkout's root is added, so that the checkout's apex_jax is the one imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "scripts/report.py", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout
