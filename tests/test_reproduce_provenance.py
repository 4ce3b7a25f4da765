"""Provenance and rules of the reproduction report (scripts/reproduce/provenance.py, rules/):
summaries record the code and rules commits, the report flags stale and unknown provenance, the
quoted paper figures say whether they are sourced, and SYNAPSE's rules are consistent by
construction. Cheap: a throw-away git repository and the committed summaries, no claim is run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reproduce import provenance, report  # scripts/reproduce/ (pyproject: pytest pythonpath)
from reproduce.rules import RULES_FILES, UNSOURCED, PaperFigure
from reproduce.rules import synapse as syn_rules

ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path):
    """A git repository with a code file and claim 1's rules file, one commit each."""
    r = tmp_path / "repo"
    (r / "apex_jax").mkdir(parents=True)
    (r / "scripts/reproduce/rules").mkdir(parents=True)
    _git(r.parent, "init", "-q", str(r))
    _git(r, "config", "user.email", "t@example.com")
    _git(r, "config", "user.name", "t")
    (r / "apex_jax/core.py").write_text("x = 1\n")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "code")
    (r / "scripts/reproduce/rules/regularity.py").write_text("SMALLEST_RHO = 0.1\n")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "rules")
    return r


def test_stamp_records_code_and_rules_commits_and_the_dirty_mark(repo):
    head = _git(repo, "rev-parse", "HEAD")
    rules = _git(repo, "log", "-1", "--format=%H", "--", "scripts/reproduce/rules/regularity.py")
    (repo / "apex_jax/core.py").write_text("x = 1\n")  # unchanged content: still clean
    (repo / "notes.txt").write_text("untracked files do not count\n")
    s = provenance.stamp("regularity_text", repo)  # claim 1's MiniLM part: claim 1's rules file
    assert s == {"code_commit": head, "rules_commit": rules, "rules_file": "scripts/reproduce/rules/regularity.py"}
    (repo / "apex_jax/core.py").write_text("x = 2\n")  # a tracked code file changed
    assert provenance.stamp("regularity", repo)["code_commit"] == head + "-dirty"
    _git(repo, "add", "apex_jax/core.py")  # staged counts too
    assert provenance.code_commit(repo) == head + "-dirty"
    _git(repo, "commit", "-q", "-m", "code 2")
    assert provenance.code_commit(repo) == _git(repo, "rev-parse", "HEAD") != head
    assert provenance.rules_commit("regularity", repo) == rules  # a code commit leaves the rules commit
    with pytest.raises(ValueError, match="claims with rules: regularity"):
        provenance.rules_file("nope")


def test_make_reproduce_keeps_only_summaries_this_commit_and_rules_wrote(repo, tmp_path):
    """`reproduce all` skips a claim whose summary this HEAD (clean) and rules wrote at this size:
    any other commit, rules commit, size, a dirty tree or a broken file reruns it."""
    path = tmp_path / "summary.json"
    assert not provenance.finished_here(path, "regularity", False, repo)  # no summary yet
    here = {**provenance.stamp("regularity", repo), "quick": False}
    path.write_text(json.dumps(here))
    assert provenance.finished_here(path, "regularity", False, repo)
    assert not provenance.finished_here(path, "regularity", True, repo)  # another size
    path.write_text(json.dumps({**here, "rules_commit": "0" * 40}))
    assert not provenance.finished_here(path, "regularity", False, repo)
    path.write_text("{not json")
    assert not provenance.finished_here(path, "regularity", False, repo)
    path.write_text(json.dumps(here))
    (repo / "apex_jax/core.py").write_text("x = 2\n")  # uncommitted code: its numbers are no commit's
    assert not provenance.finished_here(path, "regularity", False, repo)
    _git(repo, "commit", "-q", "-am", "code 2")  # a new commit: rerun
    assert not provenance.finished_here(path, "regularity", False, repo)


def test_a_commit_of_reports_or_docs_keeps_the_code_commit_and_finished_claims(repo, tmp_path):
    """Committing a finished claim's report (or docs, tests) leaves the code commit, so the rest of
    the same `make reproduce` resumes; a change to the pinned dependencies is a code change."""
    code = provenance.code_commit(repo)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**provenance.stamp("regularity", repo), "quick": False}))
    (repo / "reports").mkdir()
    (repo / "reports/README.md").write_text("claim 1: reproduced\n")
    (repo / "tests").mkdir()
    (repo / "tests/test_x.py").write_text("def test(): pass\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "report and a test")
    assert _git(repo, "rev-parse", "HEAD") != code and provenance.code_commit(repo) == code
    assert provenance.finished_here(path, "regularity", False, repo)
    assert provenance.check(json.loads(path.read_text()), "regularity", repo).state == "current"
    (repo / "pyproject.toml").write_text('dependencies = ["jax==0.10.2"]\n')
    _git(repo, "add", "pyproject.toml")  # staged, not committed: the tree's code is no commit's
    assert provenance.code_commit(repo) == code + "-dirty"
    _git(repo, "commit", "-q", "-m", "pins")
    assert provenance.code_commit(repo) == _git(repo, "rev-parse", "HEAD")
    assert not provenance.finished_here(path, "regularity", False, repo)


def test_reproduce_all_keeps_finished_claims_but_always_resumes_piecewise_ones(monkeypatch, tmp_path):
    """`reproduce all` skips a claim `finished_here` keeps, except a piecewise claim (SYNAPSE), which
    runs and restores its pieces (they check the weights too); `--rerun` runs every claim."""
    import reproduce

    ran = []

    class Claim:
        def __init__(self, name):
            self.name = name

        def main(self, argv):
            ran.append(self.name)

    monkeypatch.setattr(reproduce, "_module", Claim)
    monkeypatch.setattr(provenance, "finished_here", lambda path, name, quick: True)
    reproduce.run("all", ["--reports", str(tmp_path), "--quiet"])
    assert ran == [*reproduce.PIECEWISE, "report"] and set(reproduce.PIECEWISE) <= set(reproduce.CLAIMS)
    ran.clear()
    reproduce.run("all", ["--reports", str(tmp_path), "--quiet", "--rerun"])
    assert ran == [*reproduce.CLAIMS, "report"]


def test_check_flags_stale_rules_foreign_code_and_unknown_provenance(repo):
    s = provenance.stamp("regularity", repo)
    assert provenance.check(s, "regularity", repo).state == "current"
    dirty = provenance.check({**s, "code_commit": s["code_commit"] + "-dirty"}, "regularity", repo)
    assert dirty.state == "current" and dirty.dirty and "uncommitted changes" in dirty.sentence("regularity")
    other = provenance.check({**s, "rules_commit": "0" * 40}, "regularity", repo)
    assert other.state == "stale" and "its rules changed since" in other.reasons[0]
    foreign = provenance.check({**s, "code_commit": "1" * 40}, "regularity", repo)
    assert foreign.state == "stale" and "not HEAD or an ancestor" in foreign.reasons[0]
    # the rules change after the run: the summary's verdict is stale
    (repo / "scripts/reproduce/rules/regularity.py").write_text("SMALLEST_RHO = 0.2\n")
    assert "uncommitted changes" in provenance.check(s, "regularity", repo).reasons[0]
    _git(repo, "commit", "-q", "-am", "rules 2")
    later = provenance.check(s, "regularity", repo)
    assert later.state == "stale" and later.current_rules_commit != s["rules_commit"]
    # an older code commit is an ancestor of HEAD: not stale on that count
    assert provenance.check(provenance.stamp("regularity", repo), "regularity", repo).state == "current"
    old = {k: v for k, v in s.items() if k != "code_commit"}
    unknown = provenance.check(old, "regularity", repo)
    assert unknown.state == "provenance unknown" and "code_commit" in unknown.reasons[0]
    assert provenance.check(s, "regularity", repo.parent).state == "provenance unknown"  # not a git checkout


def test_report_marks_stale_and_current_claims(tmp_path):
    """Claim 3's committed summary with provenance fields: another rules commit renders "stale"
    (verdict withheld, the judged one named), the current one renders its verdict."""
    summary = json.loads((ROOT / "reports/transitions/summary.json").read_text())
    now = provenance.stamp("transitions", ROOT)
    reports = tmp_path / "reports"
    (reports / "transitions").mkdir(parents=True)
    path = reports / "transitions/summary.json"
    path.write_text(json.dumps({**summary, **now, "code_commit": now["code_commit"].removesuffix("-dirty"),
                                "rules_commit": "0" * 40}))
    text = report.build(reports, ROOT)
    row = next(line for line in text.splitlines() if line.startswith("| 3. transitions"))
    assert "| stale (judged " in row and "(stale)" in row and "**Verdict: stale**" in text
    assert "Provenance: **stale** (its rules changed since it was judged" in text
    path.write_text(json.dumps({**summary, **now}))
    if provenance.check({**summary, **now}, "transitions", ROOT).state == "current":  # rules file committed
        text = report.build(reports, ROOT)
        row = next(line for line in text.splitlines() if line.startswith("| 3. transitions"))
        assert "stale" not in row and "provenance unknown" not in row and f"{now['rules_commit'][:12]}" in row
        assert "Provenance: current." in text


def test_committed_reports_render_with_their_provenance():
    """The committed summaries render; those written before provenance say "provenance unknown"."""
    text = report.build(ROOT / "reports", ROOT)
    assert text.count("**Verdict:") == 6
    for name in RULES_FILES:
        s = json.loads((ROOT / "reports" / name / "summary.json").read_text())
        row = next(line for line in text.splitlines() if f"`scripts/{name}.py`" in line and line.startswith("| "))
        state = provenance.check(s, name, ROOT).state
        assert ("provenance unknown" in row) == (state == "provenance unknown")
        assert ("stale" in row) == (state == "stale")


def test_paper_figures_say_whether_they_are_sourced():
    """SYNAPSE's "paper" figures are not traced to the paper's text: marked unsourced in the rules,
    the figures table and the verdict lines (also of summaries that stored them unmarked)."""
    assert all(not f.sourced and UNSOURCED in f.text() for f in syn_rules.PAPER_FIGURES)
    assert {f.value for f in syn_rules.PAPER_FIGURES} >= {"random-control z ≈ 17–30",
                                                          "Spearman(probe, attribution) 0.46–0.70"}
    assert PaperFigure("x", "y", quote="the paper says x").sourced
    assert "quoted" in PaperFigure("x", "y", quote="the paper says x").text()
    table = report.paper_figures()
    for f in syn_rules.PAPER_FIGURES:
        assert any(f.value in line and "**unsourced**" in line for line in table.splitlines())
    assert syn_rules.paper_text("random-control z ≈ 17–30") == syn_rules.PAPER_Z.text()
    assert syn_rules.paper_text("plateau then collapse (figure)") == syn_rules.PAPER_CURVE.text()
    assert syn_rules.paper_text("something else") == "something else"
    text = report.build(ROOT / "reports", ROOT)
    if "random-control z ≈ 17–30" in text.split("## Claim 5", 1)[1]:  # the committed verdict lines quote it
        assert "Paper: random-control z ≈ 17–30 [unsourced" in text


def test_synapse_rules_are_consistent_by_construction():
    """5.1 (top-k beats random) is decided only at k levels outside 5.3's plateau; both sets are
    non-empty on the protocol's grids, and together they partition any grid."""
    from reproduce.synapse_reference import RefSettings

    rs = RefSettings()
    plateau = set(syn_rules.plateau_levels(rs.k_levels)) | set(syn_rules.plateau_levels(rs.random_k))
    deciding = set(syn_rules.beats_random_levels(rs.random_k))
    assert plateau and len(deciding) >= 2 and not plateau & deciding
    assert max(plateau) <= syn_rules.PLATEAU_MAX_K < min(deciding)
    for grid in (rs.k_levels, rs.random_k, (1.0, 10.0, 10.5, 99.0), (50.0,)):
        a, b = syn_rules.plateau_levels(grid), syn_rules.beats_random_levels(grid)
        assert not set(a) & set(b) and sorted(a + b) == sorted(float(k) for k in grid)
    # 5.3's plateau and 5.1's deciding k in the rule texts the report quotes
    assert "only at the control k levels above 10%" in syn_rules.beats_random({}).rule
    assert "decided on the true-class margin" in syn_rules.plateau_collapse({}).rule
    assert "detectable size" in syn_rules.class_asymmetry({}).rule


def test_rules_live_in_their_own_modules():
    """Every claim script's verdict functions are its rules module's; the rules modules import no
    claim script (the boundary: rules decide, scripts compute)."""
    import importlib

    for name, rules_name in RULES_FILES.items():
        claim = importlib.import_module(f"reproduce.{name}")
        rules = importlib.import_module(f"reproduce.rules.{rules_name}")
        assert claim.verdict is rules.verdict
        src = (ROOT / provenance.rules_file(name)).read_text()
        assert "import" in src and f"from ..{name} " not in src and "from .. import common" not in src
        assert shutil.which("git")  # the provenance checks need git
