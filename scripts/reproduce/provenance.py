"""Which code and which rules produced a claim's numbers, and whether they still describe them.

Every claim's summary.json records, taken when its run starts:
- `code_commit`: the last commit that changed the code (`apex_jax/`, `scripts/`, `pyproject.toml`'s
  pinned dependencies), with "-dirty" appended when tracked files there had uncommitted changes (the
  numbers then come from code no commit holds). Later commits that change only the report, tests or
  documentation leave it: committing a finished claim's report does not make the next claim of the
  same `make reproduce` "another code version", so a run longer than one sitting can resume;
- `rules_commit`: the last commit that changed the claim's rules file (`rules.RULES_FILES`,
  `git log -1 --format=%H -- <file>`), and `rules_file`, that file's path.

The report checks every summary against the repository it renders from (`check`): a summary whose
`rules_commit` is not the rules file's current last commit (or whose rules file has uncommitted
changes), or whose `code_commit` is not HEAD or one of its ancestors, is *stale*: the report still
shows its numbers but marks its verdict stale instead of stating it, since the rules now in the
repository are not the ones it was judged by, or its code is not in this history. A summary written
before these fields existed is *provenance unknown*. Outside a git checkout nothing can be checked
(provenance unknown too).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .rules import RULES_FILES

REPO = Path(__file__).resolve().parents[2]  # scripts/reproduce/provenance.py -> the repository
# the code: what a code commit changes and whose uncommitted changes mark it "-dirty" (the pins in
# pyproject.toml decide the numbers too)
CODE_PATHS = ("apex_jax", "scripts", "pyproject.toml")
DIRTY = "-dirty"
State = Literal["current", "stale", "provenance unknown"]


def _git(args: list[str], repo: Path) -> str | None:
    """`git -C repo args…`'s stripped stdout; None when git fails (no repository, no git)."""
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def rules_file(name: str) -> str:
    """The rules file of claim script `name`, relative to the repository root."""
    if name not in RULES_FILES:
        raise ValueError(f"no rules file for claim {name!r}; claims with rules: {', '.join(RULES_FILES)}")
    return f"scripts/reproduce/rules/{RULES_FILES[name]}.py"


def code_commit(repo: Path = REPO) -> str | None:
    """The last commit that changed `CODE_PATHS` (HEAD's code: later commits touched only reports,
    tests or documentation), "-dirty" appended when tracked files there differ from HEAD (staged or
    not; untracked files do not count); None outside a git checkout."""
    last = _git(["log", "-1", "--format=%H", "--", *CODE_PATHS], repo) or _git(["rev-parse", "HEAD"], repo)
    if last is None:
        return None
    changes = _git(["status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS], repo)
    return last + (DIRTY if changes else "")


def rules_commit(name: str, repo: Path = REPO) -> str | None:
    """The last commit that changed claim `name`'s rules file (None: no git, or never committed)."""
    return _git(["log", "-1", "--format=%H", "--", rules_file(name)], repo) or None


def stamp(name: str, repo: Path = REPO) -> dict:
    """The provenance fields a claim's summary.json records: code_commit, rules_commit, rules_file."""
    return {"code_commit": code_commit(repo), "rules_commit": rules_commit(name, repo), "rules_file": rules_file(name)}


def finished_here(summary_path: Path, name: str, quick: bool, repo: Path = REPO) -> bool:
    """Whether `summary_path` (a claim's summary.json) was written by this very code and rules at
    this size: its `code_commit` is HEAD's (`code_commit`: the last commit that changed the code) with
    no uncommitted code changes, its `rules_commit` the rules file's current last commit, and its
    `quick` flag `quick`. `make reproduce` then keeps it instead of rerunning the claim (a run stopped part way resumes: such a claim trains every model
    it reads from this code, so code, rules and size determine it; a claim reading models that can
    be replaced by hand resumes through its pieces instead, `reproduce.PIECEWISE`). False outside
    git, for a dirty tree, or an unreadable summary."""
    stamp_now = stamp(name, repo)
    now = stamp_now["code_commit"]
    if not now or now.endswith(DIRTY) or not summary_path.is_file():
        return False
    try:
        s = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return False
    return (s.get("code_commit") == now and s.get("rules_commit") == stamp_now["rules_commit"]
            and s.get("quick") is bool(quick))


@dataclass(frozen=True)
class Provenance:
    """A summary checked against the repository.

    Attributes:
        state: "current", "stale" or "provenance unknown".
        code_commit: the summary's code commit (None when it has none).
        rules_commit: the summary's rules commit (None when it has none).
        current_rules_commit: the rules file's last commit now.
        reasons: why the summary is stale or its provenance unknown.
    """

    state: State
    code_commit: str | None
    rules_commit: str | None
    current_rules_commit: str | None
    reasons: list[str] = field(default_factory=list)

    @property
    def dirty(self) -> bool:
        return bool(self.code_commit and self.code_commit.endswith(DIRTY))

    def sentence(self, name: str) -> str:
        """The report's provenance line for claim script `name`."""
        code = _short(self.code_commit) if self.code_commit else "not recorded"
        if self.dirty:
            code += f" (uncommitted changes in {', '.join(CODE_PATHS)}: no commit holds this code)"
        rules = _short(self.rules_commit) if self.rules_commit else "not recorded"
        now = _short(self.current_rules_commit) if self.current_rules_commit else "unknown"
        head = {"current": "current", "stale": "**stale**", "provenance unknown": "**provenance unknown**"}[self.state]
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return (f"Provenance: {head}{why}. Code commit {code}; rules commit {rules} of `{rules_file(name)}` "
                f"(its current last commit: {now}).")


def _short(commit: str) -> str:
    return commit[:12] + (DIRTY if commit.endswith(DIRTY) and len(commit) > 12 + len(DIRTY) else "")


def is_ancestor(commit: str, repo: Path = REPO) -> bool:
    """Whether `commit` is HEAD or one of its ancestors (False for an unknown commit)."""
    try:
        r = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, "HEAD"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def check(summary: dict, name: str, repo: Path = REPO) -> Provenance:
    """`summary` (claim script `name`'s summary.json) against the repository at `repo`: stale when
    its rules commit is not the rules file's current last commit, or the rules file has
    uncommitted changes, or its code commit (without "-dirty") is not HEAD or an ancestor;
    provenance unknown when the summary predates these fields or git cannot tell."""
    code, rules = summary.get("code_commit"), summary.get("rules_commit")
    now = rules_commit(name, repo)
    if code is None or rules is None:
        missing = [k for k, v in (("code_commit", code), ("rules_commit", rules)) if v is None]
        return Provenance("provenance unknown", code, rules, now,
                          [f"the summary records no {' or '.join(missing)}: it predates provenance or ran outside git"])
    if now is None:
        return Provenance("provenance unknown", code, rules, now, ["no git history to check it against"])
    reasons = []
    if rules != now:
        reasons.append(f"its rules changed since it was judged: rules commit {_short(rules)}, now {_short(now)}")
    if _git(["status", "--porcelain", "--untracked-files=no", "--", rules_file(name)], repo):
        reasons.append(f"`{rules_file(name)}` has uncommitted changes")
    base = code[: -len(DIRTY)] if code.endswith(DIRTY) else code
    if not is_ancestor(base, repo):
        reasons.append(f"its code commit {_short(code)} is not HEAD or an ancestor of it")
    return Provenance("stale" if reasons else "current", code, rules, now, reasons)
