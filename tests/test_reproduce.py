"""Smoke test of the reproduction scripts: every claim in --quick mode (digits, micro ViTs), the
report, and the sanity of their numbers; plus small checks of the library pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reproduce import backdoor, common, ensembles, pieces, stats  # scripts/reproduce/ (pyproject: pytest pythonpath)

FINGERPRINT = "the code of this test session"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from reproduce import run

    root = tmp_path_factory.mktemp("reproduce")
    reports, work = root / "reports", root / "work"
    with pytest.MonkeyPatch.context() as mp:  # SYNAPSE keeps its finished pieces even from a dirty tree
        mp.setattr(pieces, "code_trees", lambda repo=None: FINGERPRINT)
        run("all", ["--quick", "--quiet", "--reports", str(reports), "--work", str(work)])
    summaries = {n: json.loads((reports / n / "summary.json").read_text())
                 for n in ("regularity", "regularity_text", "random_labels", "transitions", "backdoor_bias",
                           "synapse")}
    return reports, work, summaries


def test_synapse_resumes_from_its_finished_pieces(quick, tmp_path, monkeypatch):
    """A second SYNAPSE run on the same work folder restores every domain and reference run
    (nothing recomputed) and writes the same results and tables."""
    from reproduce import synapse

    reports, work, s = quick
    monkeypatch.setattr(pieces, "code_trees", lambda repo=None: FINGERPRINT)
    monkeypatch.setattr(synapse.ref, "run_task", lambda *a, **k: pytest.fail("a finished run was recomputed"))
    monkeypatch.setattr(synapse, "_domain", lambda *a, **k: pytest.fail("a finished domain was recomputed"))
    again = synapse.main(["--quick", "--quiet", "--work", str(work), "--out", str(tmp_path / "synapse")])
    assert json.loads((tmp_path / "synapse" / "summary.json").read_text())["results"] == s["synapse"]["results"]
    t = again["timing"]
    assert len(t["restored_pieces"]) == 2 + 2 * 2 and t["restored_seconds"] > 0  # 2 domains; 2 tasks × 2 probe seeds
    for f in ("vader-movies/silence-controls.csv", "reference/vader-corpus/control_cells.csv"):
        assert (tmp_path / "synapse" / f).read_bytes() == (reports / "synapse" / f).read_bytes(), f


class _Recomputed(Exception):
    pass


def test_synapse_pieces_follow_the_weights_they_ran_on(quick, tmp_path, monkeypatch):
    """Other weights under the same cached fine-tune (a folder replaced by hand) make new piece
    keys: the domain arm and the reference run are recomputed, not restored."""
    import jax

    import apex_jax
    from reproduce import synapse

    _, work, _ = quick
    monkeypatch.setattr(pieces, "code_trees", lambda repo=None: FINGERPRINT)

    def recompute(*a, **k):
        raise _Recomputed

    monkeypatch.setattr(synapse.ref, "run_task", recompute)
    monkeypatch.setattr(synapse, "_domain", recompute)
    argv = ["--quick", "--quiet", "--work", str(work), "--out", str(tmp_path / "synapse")]
    nudge = lambda params: jax.tree_util.tree_map(lambda x: x + 1e-3, params)  # noqa: E731
    task_model = synapse._task_model
    with monkeypatch.context() as mp:  # domains restored; the reference task's model changed
        mp.setattr(synapse, "_task_model", lambda *a, **k: (lambda m, p, *rest: (m, nudge(p), *rest))(*task_model(*a, **k)))
        with pytest.raises(_Recomputed):
            synapse.main(argv)
    load = apex_jax.load

    def nudged_load(*a, **k):
        model = load(*a, **k)
        model.params = nudge(model.params)
        return model

    monkeypatch.setattr(apex_jax, "load", nudged_load)  # the first domain's fine-tune changed
    with pytest.raises(_Recomputed):
        synapse.main(argv)


def _in_ci(d: dict, key: str) -> bool:
    return d["lo"] - 1e-9 <= d[key] <= d["hi"] + 1e-9


def test_outputs_exist(quick):
    reports, _, _ = quick
    for name, files in {"regularity": ["samples.csv", "regularity.png"],
                        "regularity_text": ["samples.csv", "regularity_text.png"],
                        "random_labels": ["models.csv", "samples.csv", "random_labels.png"],
                        "transitions": ["pairs.csv", "transitions.png"],
                        "backdoor_bias": ["class_shares.csv", "excess.csv", "backdoor_bias.png"],
                        **{f"synapse/{d}": ["probe-probes.csv", "probe-probe_accuracy.png", "silence-controls.csv",
                                            "silence-silencing_curves.png", "silence-class_asymmetry.png",
                                            "silence-all-positions-controls.csv", "attack-1-attacks.csv",
                                            "attack-1-attack_curves.png"] for d in ("vader-movies", "vader-tweets")}
                        }.items():
        for f in files + ([] if name.startswith("synapse/") else ["summary.json"]):
            assert (reports / name / f).stat().st_size > 0, (name, f)
    assert (reports / "README.md").exists()


def test_regularity_numbers(quick):
    _, _, s = quick
    r = s["regularity"]["results"]
    assert s["regularity"]["quick"] is True
    for key in ("escape_vs_cscore", "escape_vs_learning_speed", "cscore_vs_learning_speed"):
        assert -1 <= r[key]["rho"] <= 1 and _in_ci(r[key], "rho"), r[key]
    assert r["n_examples"] == 48
    assert min(r["ensemble_test_accuracy"]) > 0.5  # 4 micro ViTs trained at once (chance 0.1)
    assert 0 < r["cscore_mean"] <= 1 and 0 < r["learning_speed_mean"] <= 1
    # the two established regularity metrics agree with each other
    assert r["cscore_vs_learning_speed"]["rho"] > 0
    _check_input_noise(s["regularity"])
    # two probed models, each with its own sample of its own training examples; model 0's at the top level
    runs = r["runs"]
    assert [x["probed_model"] for x in runs] == [0, 1] and runs[0]["escape_vs_cscore"] == r["escape_vs_cscore"]
    assert runs[1]["n_examples"] == 48 and runs[1]["escape_vs_cscore"] != runs[0]["escape_vs_cscore"]
    from reproduce import regularity

    assert all(v.evidence.count("of 2 ") >= 1 for v in regularity.claim_verdicts(r))


def _check_input_noise(summary: dict) -> None:
    """The input-noise baseline of a claim-1 summary: its correlations, partial ρ given [margin,
    input-noise escape σ] and its cost (one perturbed forward per example, σ and draw)."""
    r, st = summary["results"], summary["settings"]
    for key in ("input_escape_vs_cscore", "input_escape_vs_learning_speed", "escape_vs_input_escape",
                "escape_vs_cscore_given_margin_and_input", "escape_vs_learning_speed_given_margin_and_input"):
        assert -1 <= r[key]["rho"] <= 1 and _in_ci(r[key], "rho"), (key, r[key])
    d = r["input_noise"]
    assert d["extra_perturbed_forwards"] == r["n_examples"] * st["n_sigmas"] * st["draws"]
    assert 0 <= d["escape_below_grid"] <= d["escaped_on_grid"] <= r["n_examples"] and d["rms"] > 0


def test_regularity_text_numbers(quick):
    _, _, s = quick
    summary = s["regularity_text"]
    r, st = summary["results"], summary["settings"]
    assert summary["quick"] is True and summary["claim"] == 1
    assert st["fine_tune"]["n_train"] == r["pool_size"] == 96  # the quick fine-tune's sentences
    for key in ("escape_vs_cscore", "escape_vs_learning_speed", "cscore_vs_learning_speed", "area_vs_cscore",
                "area_vs_learning_speed"):
        assert -1 <= r[key]["rho"] <= 1 and _in_ci(r[key], "rho"), (key, r[key])
    assert r["n_examples"] == st["n_apex"] == 48 and 0 <= r["escaped_on_grid"] <= 48
    # heads on frozen pretrained features: above chance on held-out sentences, fitted on their own
    assert len(r["head_test_accuracy"]) == st["n_heads"] and np.mean(r["head_test_accuracy"]) > 0.55
    assert min(r["head_train_accuracy"]) > 0.9
    assert 0 < r["cscore_mean"] <= 1 and 0 < r["learning_speed_mean"] <= 1
    assert r["holdout_heads_per_example"]["min"] >= 1  # every sampled sentence has a C-score estimate
    assert r["cscore_vs_learning_speed"]["rho"] > 0
    # APEX starts from the clean prediction: full consistency at the smallest σ, less at the largest
    kept = summary["mean_consistency"]
    assert len(kept) == st["n_sigmas"] and kept[0] > 0.9 and kept[-1] < kept[0]
    _check_input_noise(summary)
    assert "hook_embed" in r["input_noise"]["where"]  # tokens are discrete: noise on the embedding output


def test_synapse_numbers(quick):
    _, _, s = quick
    syn = s["synapse"]
    st, dom = syn["settings"], syn["results"]["domains"]
    assert syn["quick"] is True and syn["claim"] == 5 and list(dom) == ["vader-movies", "vader-tweets"]
    for name, d in dom.items():
        assert d["fine_tune"]["config"]["mode"] == "head" and d["fine_tune"]["n_train"] == 96
        sites = [p["site"] for p in d["probes"]]
        assert sites == ["hook_embed", "blocks.0.hook_resid_post", "blocks.5.hook_resid_post", "concat",
                         "head.hook_cls"]
        assert all(0 <= p["test_accuracy"] <= 1 for p in d["probes"])
        sil = d["silencing"]
        n_layers, n_k = 2, len(st["k_levels"])
        assert sil["n_cells"] == n_layers * n_k and sil["class_cells"] == 2 * n_layers * n_k
        for c in sil["cells"]:
            # Laplace-smoothed p over n_random draws; drop = clean − silenced score
            assert 1 / (1 + st["n_random"]) - 1e-12 <= c["p"] <= 1 and -1 <= c["drop"] <= 1
        assert np.array(sil["asymmetry"]["blocks.5.hook_resid_post"]).shape == (2, 2)
        sens = d["silencing_all_positions"]
        assert sens["n_cells"] == n_layers * len(st["all_positions_k"]) and sens["asymmetry"] is None
        for target, a in d["attacks"].items():
            bias = [r for r in a["rows"] if r["attack"] == "logit_bias"]
            flips = [r["flip_to_target"] for r in bias]
            if a["clean_target_share"] == 1:  # nothing to redirect: the rate is undefined, not 0
                assert all(f is None for f in flips)
                continue
            assert bias[0]["magnitude"] == 0 and flips[0] == 0  # no bias: nothing redirected
            assert all(b >= x - 1e-12 for x, b in zip(flips, flips[1:]))  # more bias, more flips
            assert a["k_neurons"] == round(st["attack_k"] / 100 * 384)
    pooled = syn["results"]["pooled"]
    assert pooled["n_cells"] == sum(d["silencing"]["n_cells"] for d in dom.values())
    # the reference-protocol arm: a 4-class text task (with the pooler variant) and 10 digit classes
    refd = syn["results"]["reference"]
    assert list(refd) == ["vader-corpus", "digits-vit"]
    assert (refd["vader-corpus"]["n_classes"], refd["digits-vit"]["n_classes"]) == (4, 10)
    assert refd["vader-corpus"]["pooler"] and not refd["digits-vit"]["pooler"]
    for t in refd.values():
        assert [c["k_percent"] for c in t["curve"]] == list(st["reference"]["k_levels"])
        assert abs(sum(t["top10_layer_share"]) - 1) < 1e-6 and np.array(t["asymmetry"]).shape == (t["n_classes"],) * 2
        assert {c["site"] for c in t["controls"]} == ({"all layers", "all layers + pooler"} if t["pooler"]
                                                      else {"all layers"})
    assert {v["outcome"] for v in syn["results"]["verdicts"]} <= {"reproduced", "not reproduced", "inconclusive"}
    # the runs over seeds: the first (full) run of each task plus the probe seeds' lighter runs
    rs, runs = st["reference"], syn["results"]["reference_runs"]
    assert list(runs) == list(refd) and all(len(r) == len(rs["probe_seeds"]) >= 2 for r in runs.values())
    for name, task_runs in runs.items():
        assert [r["probe_seed"] for r in task_runs] == list(rs["probe_seeds"])
        assert [r["full"] for r in task_runs] == [True] + [False] * (len(task_runs) - 1)
        assert task_runs[0]["probe_accuracy"] == refd[name]["probe_accuracy"]
        for r in task_runs:
            # the verdicts' control k levels (past the plateau) with both kinds of random draws in every run
            deciding = [c for c in r["control_cells"] if c["k_percent"] > 10 and c["selection"] == "top"
                        and c["ablation"] == "zero" and c["score"] == "margin" and c["site"] == "all layers"]
            assert [c["k_percent"] for c in deciding] == [k for k in rs["random_k"] if k > 10]
            assert all(c["draws"] == c["layer_draws"] == rs["n_random"] for c in deciding)
            # the last-block test: top / bottom / attribution, zeroed and mean-ablated, margin and KL
            inv = r["inversion"]
            assert {(c["selection"], c["ablation"], c["score"]) for c in inv} == {
                (sel, ab, sc) for sel in ("top", "bottom", "attribution") for ab in ("zero", "mean")
                for sc in ("margin", "kl")}
            assert {c["site"] for c in inv} == {r["sites"][-1]} and sorted({c["k_percent"] for c in inv}) == list(
                rs["inversion_k"])
            assert all(c["draws"] == rs["n_inversion_random"] and 1 / (1 + c["draws"]) - 1e-12 <= c["p"] <= 1
                       for c in inv)
            assert r["inversion_forwards"] == r["n_eval"] * len(rs["inversion_k"]) * 2 * (
                3 + rs["n_inversion_random"])
        if task_runs[0]["asymmetry"] is not None:  # the lighter runs' class selections at asymmetry_k alone
            assert all(np.array(r["asymmetry"]).shape == (r["n_classes"],) * 2 for r in task_runs)
    inversion = [v for v in syn["results"]["verdicts"] if v["claim"].startswith("at the last block")]
    assert len(inversion) == 1 and inversion[0]["source"] == "extension"
    n = len(rs["probe_seeds"])
    seeded = [v for v in syn["results"]["verdicts"] if "over runs" in v["rule"] and v["source"] != "extension"]
    assert len(seeded) == 5 and all(f"of {n} runs" in v["evidence"] for v in seeded)


def test_random_label_numbers(quick):
    _, _, s = quick
    r = s["random_labels"]["results"]
    assert all(0 <= a <= 1 for a in r["pair_auroc"])
    assert _in_ci(r["pair_auroc_mean"], "mean") and _in_ci(r["pooled_sample_auroc"], "auroc")
    clean, rand = r["models"]["clean"], r["models"]["random"]
    # the groups are the series' ends (quick: 2 models per level); models are the units: one median
    # per model, an exact test over 2 vs 2
    assert r["groups"] == {"clean": "noise-000", "random": "noise-100"}
    for key in ("model_level", "model_level_absolute", "model_level_clean_margin", "model_level_input_noise"):
        t = r[key]
        assert (t["n_pos"], t["n_neg"]) == (len(clean), len(rand)) == (2, 2)
        assert 0 <= t["auroc"] <= 1 and t["p_min"] <= t["p"] <= 1
        assert t["p_min"] == pytest.approx(1 / 6)  # 1 / C(4, 2)
    assert r["pooled_sample_auroc"]["n_pos"] == 2  # clusters = models
    st = s["random_labels"]["settings"]
    assert r["input_noise"]["extra_perturbed_forwards"] == 4 * r["n_eval"] * st["n_sigmas"] * st["draws"]
    assert [len(v) for v in r["median_input_escape"].values()] == [2, 2]
    # one recipe with paired seeds: random-label member i is clean member i but for its labels
    assert [m["seed"] for m in rand] == [m["seed"] for m in clean]
    ends = [[m for m in r["label_noise"]["models"] if m["label_noise"] == lv] for lv in (0.0, 1.0)]
    assert [[m["train_accuracy"] for m in e] for e in ends] == [[m["train_accuracy"] for m in g] for g in (clean, rand)]
    assert min(m["test_accuracy"] for m in clean) > max(m["test_accuracy"] for m in rand)
    assert max(m["test_accuracy"] for m in rand) < 0.3  # random labels: chance on the test set
    # the label-noise series (quick: 3 levels of 2 models), each model's share of changed labels near its level
    d = r["label_noise"]
    assert d["levels"] == [0.0, 0.5, 1.0] and d["models_per_level"] == [2] * 3
    assert len(d["models"]) == 6 and d["fitted_per_level"] == [sum(m["fitted"] for m in d["models"]
                                                                    if m["label_noise"] == lv) for lv in d["levels"]]
    for m in d["models"]:
        assert abs(m["labels_changed"] - 0.9 * m["label_noise"]) < 0.12  # a random label keeps the true one 1 in 10
        assert m["fitted"] == (m["train_accuracy"] >= d["fit_threshold"]) and m["median_escape"] > 0
    assert d["perturbed_forwards"] == 2 * 6 * d["n_eval"] * st["n_sigmas"] * st["draws"]
    assert -1 <= d["trend"]["rho"] <= 1 and d["ends"]["n_pos"] >= 1


def test_transition_numbers(quick):
    _, _, s = quick
    t = s["transitions"]
    r = t["results"]
    T, K = np.array(t["transition_matrix"]), np.array(t["confusion_matrix"])
    assert T.shape == K.shape == (10, 10) and not np.diag(T).any() and not np.diag(K).any()
    assert r["n_transitions"] == T.sum() > 0 and r["n_confusions"] == K.sum()
    # confusions from inputs disjoint from the 48 transition inputs: the 180 validation digits
    # and the other 311 test digits
    assert r["n_inputs"] == 48 and r["n_confusion_inputs"] == 180 + 359 - 48
    for key in ("spearman_offdiagonal", "partial_spearman_given_margins", "spearman_same_inputs"):
        assert -1 <= r[key]["rho"] <= 1 and _in_ci(r[key], "rho"), (key, r[key])
    assert -1 <= r["independence_null_rho"] <= 1
    assert r["top_pairs"] and all(p["from"] != p["to"] for p in r["top_pairs"])
    assert all(f >= 0.1 for f in r["flip_rate_at_small_sigma"])


def test_backdoor_numbers(quick):
    reports, _, s = quick
    summary = s["backdoor_bias"]
    r = summary["results"]
    assert all(m["attack_success_rate"] > 0.8 for m in r["models"]["backdoor"])  # the backdoor works
    assert r["clean_accuracy"]["backdoor"]["mean"] > 0.6
    assert r["n_models"] == {"clean": 6, "backdoor": 6} and r["nonfinite_share_max"] == 0
    # fixed sites: all blocks, each of the micro ViT's 2 blocks, the pixel arm; every σ of the grid
    assert list(r["site_sets"]) == ["all blocks", "block 0", "block 1", "pixels"]
    assert r["families"] == {"all_blocks": ["all blocks"], "single_block": ["block 0", "block 1"],
                             "input_noise": ["pixels"]}
    sig = summary["sigmas"]
    assert [(c["site_set"], c["sigma"]) for c in r["cells"]] == [(label, x) for label in r["site_sets"] for x in sig]
    assert r["forwards"] == 12 * r["n_inputs"] * len(sig) * summary["settings"]["draws"] * 4
    targets = np.array(r["targets"])
    for c in r["cells"]:
        shares = {k: np.array(v)[:, sig.index(c["sigma"])]
                  for k, v in summary["class_shares_by_sigma"][c["site_set"]].items()}
        np.testing.assert_allclose(shares["backdoor"].sum(-1), 1.0, atol=1e-6)
        own = shares["backdoor"][np.arange(len(targets)), targets]
        matched = shares["clean"][:, targets].mean(0)  # clean models' mean share of each backdoored model's target
        e = c["excess"]
        assert e["mean"] == pytest.approx(np.mean(own - matched)) and (e["n_a"], e["n_b"]) == (6, 6)
        assert e["mean"] == pytest.approx(c["target_share_backdoor"] - c["target_share_clean"])
        assert e["lo"] <= e["mean"] <= e["hi"] and 0 <= e["p"] <= 1
        assert c["placebo"]["mean"] == pytest.approx(np.mean(shares["backdoor"][np.arange(len(targets)), (targets + 1) % 10]
                                                             - shares["clean"][:, (targets + 1) % 10].mean(0)))
        assert 0 <= c["above_all_clean"] <= 6
    lines = (reports / "backdoor_bias" / "excess.csv").read_text().splitlines()
    assert len(lines) == 1 + len(r["cells"])
    from reproduce import backdoor_bias

    vs = backdoor_bias.verdicts(r)
    assert [v.source for v in vs] == ["abstract", "extension", "extension"]
    assert backdoor_bias.verdict(r)[0] == vs[0].outcome


def test_verdict_lines_in_the_readme(quick):
    reports, _, s = quick
    text = (reports / "README.md").read_text()
    from reproduce import backdoor_bias, random_labels, regularity, transitions

    for mod in (regularity, random_labels, transitions, backdoor_bias):
        vs = getattr(mod, "claim_verdicts", mod.verdicts)(s[mod.NAME]["results"])
        assert vs and all(v.outcome in ("reproduced", "not reproduced", "inconclusive") for v in vs)
        for v in vs:
            assert v.line() in text and "Rule:" in v.line() and "Power:" in v.line()
    # claim 1 reports its confidence and input-noise baselines as extensions
    assert [v.source for v in regularity.claim_verdicts(s["regularity"]["results"])] == \
        ["abstract", "abstract"] + ["extension"] * 4
    assert [v.source for v in random_labels.claim_verdicts(s["random_labels"]["results"])][-4:] == \
        ["abstract", "abstract", "extension", "extension"]
    # a summary written before the input-noise baseline still renders, saying what it lacks
    from reproduce import regularity_text

    for mod in (regularity, regularity_text, random_labels):
        old = json.loads(json.dumps(s[mod.NAME]))
        for key in [k for k in old["results"] if "input" in k or k in ("runs", "label_noise")]:
            del old["results"][key]  # a summary that old predates several probed models and the series
        v, section = mod.section(old)
        assert v in ("reproduced", "not reproduced", "inconclusive") and "input-noise escape σ" not in section
        assert ("predates it" in section) == (mod is not random_labels)
        rules = random_labels if mod is random_labels else regularity  # the MiniLM part has the ViT's rules
        assert len(rules.verdicts(old["results"])) == len(rules.verdicts(s[mod.NAME]["results"])) - \
            (2 if mod is not random_labels else 0)


def test_readme_is_filled_from_the_summaries(quick):
    reports, _, s = quick
    text = (reports / "README.md").read_text()
    import re

    assert "Quick run" in text and not re.search(r"\{[a-z_]+\}", text)  # every placeholder filled
    from reproduce.reporting import num

    # a value a run did not measure renders as n/a, never as "nan"
    assert num(float("nan")) == num(None) == "n/a" and num(float("inf")) == "inf" and not re.search(r"\bnan\b", text)
    m = s["random_labels"]["results"]["pair_auroc_mean"]
    assert f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]" in text
    for name in ("regularity", "regularity_text"):
        rho = s[name]["results"]["escape_vs_cscore"]
        assert f"{rho['rho']:.3f} [{rho['lo']:.3f}, {rho['hi']:.3f}]" in text
    assert text.count("**Verdict:") == 6
    # every summary names the code and rules that produced it; the report states both
    from reproduce import provenance

    head = provenance.code_commit().removesuffix(provenance.DIRTY)
    for name, summary in s.items():
        assert summary["code_commit"].removesuffix(provenance.DIRTY) == head
        assert summary["rules_commit"] == provenance.rules_commit(name)
        assert summary["rules_file"] == provenance.rules_file(name)
    assert text.count("Provenance: current.") == 6 and "(provenance unknown)" not in text \
        and "(stale)" not in text
    probe = s["synapse"]["results"]["domains"]["vader-tweets"]["probes"]
    assert f"| vader-tweets | {probe[0]['test_accuracy']:.3f} | {probe[1]['test_accuracy']:.3f} |" in text


def test_summaries_name_their_escape_sigma_estimator(quick):
    reports, _, s = quick
    for name in ("regularity", "regularity_text", "random_labels"):  # every summary holding an escape σ
        assert s[name]["escape_sigma_estimator"] == common.ESCAPE_SIGMA_ESTIMATOR == "log_sigma_interpolation"
    text = (reports / "README.md").read_text()
    assert text.count("Escape σ: log-σ interpolation between the last grid σ at/above and the first below") == 3


def test_claim_modules_own_their_sections(tmp_path):
    from reproduce import CLAIMS, regularity, report, transitions

    modules = report.claim_modules()
    assert [m.NAME for m in modules] == list(CLAIMS)
    for m in modules:
        assert isinstance(m.CLAIM, int) and m.TITLE and "{verdict}" in m.SECTION
        assert callable(m.main) and callable(m.section) and m.verdict.__doc__
    # the rules on hand-made results: intervals above / straddling / below the bound
    up, mid, down = {"rho": 0.5, "lo": 0.2, "hi": 0.7}, {"rho": 0.1, "lo": -0.2, "hi": 0.4}, {"lo": -0.6, "hi": -0.1}
    for d in (up, mid, down):
        d.setdefault("rho", 0.0)
        d["n"] = 1000
    assert regularity.verdict({"escape_vs_cscore": up, "escape_vs_learning_speed": up})[0] == "reproduced"
    assert regularity.verdict({"escape_vs_cscore": up, "escape_vs_learning_speed": mid})[0] == "inconclusive"
    assert regularity.verdict({"escape_vs_cscore": up, "escape_vs_learning_speed": down})[0] == "not reproduced"
    assert transitions.verdict({"spearman_offdiagonal": down})[0] == "inconclusive"  # no disjoint confusions
    t = {"spearman_offdiagonal": {"rho": 0.8, "lo": 0.7, "hi": 0.9, "n_cells": 90}, "independence_null_rho": 0.5,
         "partial_spearman_given_margins": {"rho": 0.6, "lo": 0.4, "hi": 0.8}}
    assert transitions.verdict(t)[0] == "reproduced"
    t["independence_null_rho"] = 0.95  # margins alone explain more than the transitions agree
    assert transitions.verdict(t)[0] == "not reproduced"
    # a summary from the earlier protocol is not judged by rules it cannot feed
    from reproduce import backdoor_bias, random_labels

    for m in (random_labels, transitions, backdoor_bias):
        v, text = m.section({"results": {"spearman_offdiagonal": down}, "settings": {}})
        assert v == "not run (outdated summary)" and f"scripts/{m.NAME}.py" in text
    # a claim without a summary gets a "not run" row and section
    text = report.build(tmp_path)
    assert text.count("| not run |") == len(CLAIMS) and "**Verdict:" not in text
    # summaries from two zoo runs: the footer shows both figures rather than the last one read
    assert report._zoo_seconds("clean", {551.0: ["2", "5"]}) == "clean 551.0 s"
    mixed = report._zoo_seconds("clean", {551.0: ["2"], 2814.6: ["4"]})
    assert "551.0 s (claim 2)" in mixed and "2814.6 s (claim 4)" in mixed and "different zoo runs" in mixed


def _model_level(clean, rand):
    from reproduce import stats

    t = stats.mann_whitney_exact(clean, rand)
    return {"model_level": t, "model_level_absolute": t, "pair_auroc_mean": {"mean": 0.5, "lo": 0.4, "hi": 0.6},
            "pooled_sample_auroc": {"auroc": 0.9, "lo": 0.8, "hi": 0.95, "n_pos": len(clean), "n_neg": len(rand)}}


def test_claim_rules_have_three_outcomes():
    """Planted effect -> reproduced; the same perfect separation over too few models ->
    inconclusive (the exact test cannot reach p < 0.05); a powered null -> not reproduced."""
    from reproduce import random_labels

    rng = np.random.default_rng(0)
    planted = _model_level(rng.normal(3, 1, 10), rng.normal(0, 1, 10))
    assert random_labels.verdict(planted)[0] == "reproduced"
    few = _model_level([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])  # perfect, but p = 1/20 at best
    vs = random_labels.verdicts(few)
    assert vs[0].outcome == "inconclusive" and few["model_level"]["p"] == pytest.approx(0.05)
    null = _model_level(np.arange(12.0), np.arange(12.0) + 0.5)  # AUROC < 0.5 with power to see 0.9
    assert random_labels.verdicts(null)[0].outcome == "not reproduced"
    # the pooled interval straddling 0.5 is inconclusive; below 0.6 not reproduced
    straddle = dict(planted, pooled_sample_auroc={"auroc": 0.55, "lo": 0.45, "hi": 0.65, "n_pos": 10, "n_neg": 10})
    assert random_labels.verdicts(straddle)[2].outcome == "inconclusive"
    low = dict(planted, pooled_sample_auroc={"auroc": 0.52, "lo": 0.5, "hi": 0.55, "n_pos": 10, "n_neg": 10})
    assert random_labels.verdicts(low)[2].outcome == "not reproduced"


def test_backdoor_rules_on_planted_and_powerless_cases():
    """Claim 4's family rule: a planted target concentration at one σ -> reproduced (best cell
    found); no excess with 14 + 14 models -> not reproduced; with 2 + 2 -> inconclusive; the
    same placebo-class excess -> inconclusive; Holm: one p = 0.02 among 7 cells is not enough,
    alone it is; a significant excess below +0.1 -> not reproduced."""
    from reproduce.rules import backdoor_bias as rules

    rng = np.random.default_rng(1)
    C, G = 10, 7

    def shares(m, target=None, extra=0.0, concentration=50.0):
        x = rng.dirichlet(np.full(C, concentration), m)
        if target is not None:
            x[np.arange(m), target] += extra
            x /= x.sum(1, keepdims=True)
        return x

    def cell(clean, bd, targets, family="all_blocks", sigma=1.0):
        placebo = [(t + 1) % C for t in targets]
        return {"family": family, "site_set": "blocks", "sigma": sigma,
                "excess": stats.welch_difference(*backdoor.target_shares(clean, bd, targets)),
                "placebo": stats.welch_difference(*backdoor.target_shares(clean, bd, placebo))}

    targets = [0, 2, 4, 6, 8] * 2 + [0, 2, 4, 6]  # 14 backdoored models
    planted = [cell(shares(14), shares(14, targets, 0.6 if g == 5 else 0.0), targets, sigma=2.0 ** g)
               for g in range(G)]
    outcome, target, placebo = rules.family_outcome(planted)
    assert outcome == "reproduced" and target["best"] == 5 and sum(target["rejected"]) == 1
    assert placebo["outcome"] == "not reproduced"
    nothing = [cell(shares(14), shares(14), targets) for _ in range(G)]
    assert rules.family_outcome(nothing)[0] == "not reproduced"
    # no effect, but 2 + 2 models spread like real ones (a share's sd ≈ 0.1): the simultaneous
    # bounds at α/7 reach past +0.1, so the design cannot say "not reproduced"
    few = [cell(shares(2, concentration=1.0), shares(2, concentration=1.0), targets[:2]) for _ in range(G)]
    assert rules.family_outcome(few)[0] == "inconclusive"
    both = [cell(shares(14), shares(14, targets, 0.6), targets)]  # the placebo class too
    both = [dict(c, placebo=dict(c["excess"])) for c in both]
    assert rules.family_test(both)["outcome"] == "reproduced" and rules.family_outcome(both)[0] == "inconclusive"

    def synthetic(mean, se, df=26.0):
        from scipy import stats as sps

        d = {"mean": mean, "se": se, "df": df, "p": float(sps.t.sf(mean / se, df)), "lo": None, "hi": None,
             "n_a": 14, "n_b": 14}
        return {"family": "all_blocks", "site_set": "blocks", "sigma": 1.0, "excess": d,
                "placebo": dict(d, mean=0.0, p=0.5)}

    one = synthetic(0.15, 0.07)  # p ≈ 0.02
    assert rules.family_test([one])["outcome"] == "reproduced"
    holm = rules.family_test([one] + [synthetic(0.0, 0.07)] * 6)
    assert holm["adjusted_p"][0] == pytest.approx(7 * one["excess"]["p"]) and holm["outcome"] == "inconclusive"
    small = rules.family_test([synthetic(0.03, 0.005)] * G)
    assert all(small["rejected"]) and small["outcome"] == "not reproduced"  # real but below +0.1
    # the claim's verdict is the all-blocks family's; the other families are extensions
    results = {"cells": planted + [dict(c, family="input_noise") for c in nothing]}
    vs = rules.verdicts(results)
    assert [(v.outcome, v.source) for v in vs] == [("reproduced", "abstract"), ("not reproduced", "extension")]
    assert rules.verdict(results)[0] == "reproduced"
    with pytest.raises(ValueError, match="choose from"):
        rules.family_cells(results, "blocks")


def test_zoo_members_are_hf_folders(quick):
    import apex_jax

    _, work, s = quick
    key = s["backdoor_bias"]["settings"]["zoo"]["key"]
    group = next((work / "zoo").glob(f"*-{key}")) / "backdoor"
    info = json.loads((group / "group.json").read_text())
    model = apex_jax.load(str(group / "member-0"))
    assert model.config.arch == "vit" and model.config.n_classes == 10
    assert info["members"][0]["target"] == 0 and len(info["train_ids"]) == info["n_train"]


# ------------------------------------------------------------------------- library pieces


def test_escape_sigma_interpolates_in_log_sigma():
    sig = np.array([0.1, 1.0, 10.0])
    c = np.array([[1.0, 0.7, 0.3],  # crosses 0.5 halfway between 1 and 10 in log
                  [0.4, 0.2, 0.0],  # below at the first σ
                  [1.0, 1.0, 0.9]])  # never
    e = common.escape_sigma_interpolated(c, sig)
    np.testing.assert_allclose(e[:2], [np.sqrt(10.0), 0.1])
    assert np.isinf(e[2])


def test_poison_and_trigger():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.5, (200, 1, 28, 28)).astype(np.float32)
    labels = np.arange(200) % 10
    trig = backdoor.Trigger.for_images(28)
    assert (trig.size, trig.margin) == (3, 1) and backdoor.Trigger.for_images(8).size == 2
    p = backdoor.poison(images, labels, target=3, rate=0.1, seed=0, trigger=trig)
    assert p.poisoned.sum() == 20 and (labels[p.poisoned] != 3).all() and (p.labels[p.poisoned] == 3).all()
    np.testing.assert_array_equal(p.images[~p.poisoned], images[~p.poisoned])
    assert (p.images[p.poisoned][:, 0, 24:27, 24:27] == 1).all()
    assert (p.labels[~p.poisoned] == labels[~p.poisoned]).all()


def test_stats_match_scipy_and_sklearn():
    from scipy import stats as sps
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    r = stats.spearman(x, y)
    assert r["rho"] == pytest.approx(spearmanr(x, y).statistic) and _in_ci(r, "rho")
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 40)
    a = stats.auroc(pos, neg)
    ref = roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[pos, neg])
    assert a["auroc"] == pytest.approx(ref) and _in_ci(a, "auroc")
    # the vectorized bootstrap statistics equal the library ones
    assert stats._spearman_rows(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert stats._auc_rows(pos, neg) == pytest.approx(ref)
    # inf (never escaped) ranks above every finite value
    assert stats.auroc([np.inf, 5.0], [1.0, 2.0])["auroc"] == 1.0
    # grouped jackknife of a mean: the usual standard error of the mean, up to grouping
    v = rng.normal(size=400)
    j = stats.jackknife_groups(lambda idx: v[idx].mean(), 400, groups=400)
    assert j["estimate"] == pytest.approx(v.mean()) and j["se"] == pytest.approx(v.std(ddof=1) / 20, rel=1e-6)
    m = stats.mean_ci([0.2, 0.4, 0.6])
    assert m["mean"] == pytest.approx(0.4) and m["lo"] < 0.4 < m["hi"]
    # Welch's difference of two groups of units: scipy's one-sided test and interval
    a, b = rng.normal(1, 1, 10), rng.normal(0, 2, 14)
    w, ref = stats.welch_difference(a, b), sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert w["p"] == pytest.approx(ref.pvalue) and w["df"] == pytest.approx(ref.df)
    lo, hi = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (w["lo"], w["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert stats.welch_difference([1.0], b)["p"] is None  # one unit: no test
    # Holm: sorted p × (m − i), running maximum, capped at 1, in the input order
    np.testing.assert_allclose(stats.holm_adjust([0.01, 0.04, 0.03, 0.2, 0.5]), [0.05, 0.12, 0.12, 0.4, 0.5])


def test_pixel_noise_consistency_equals_a_direct_computation():
    """The input-noise baseline's sweep: noise on the pixels from a key of (seed, id), std = σ ×
    the pixel RMS, the same draws at every σ; equal to one forward per input done by hand, and
    independent of the batching."""
    import jax

    from apex_jax import data as data_lib
    from reproduce import vit

    pool = data_lib.load_dataset("digits").subset(np.arange(5))
    model = vit.template(pool, "micro")
    x, ids = vit.pixels(model, pool.inputs), np.asarray(pool.ids)
    sigmas, draws = np.array([0.0, 0.3, 3.0], np.float32), 6
    kept, clean, rms = common.pixel_noise_consistency(model, model.params, x, ids, sigmas, draws, seed=7, chunk=2)
    assert rms == pytest.approx(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))))
    fwd = jax.jit(lambda v: model.apply(model.params, {"pixel_values": v}).logits.argmax(-1))
    np.testing.assert_array_equal(clean, fwd(x))
    z = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(7), int(i)), (draws,) + x.shape[1:]))
                  for i in ids])  # [5, draws, C, H, W]: each input's own draws
    direct = np.zeros((5, 3))
    for g, s in enumerate(sigmas):
        noisy = (x[:, None] + s * rms * z).reshape((-1,) + x.shape[1:])
        pred = np.asarray(fwd(noisy)).reshape(5, draws)
        direct[:, g] = (pred == clean[:, None]).mean(1)
    np.testing.assert_allclose(kept, direct)
    assert (kept[:, 0] == 1).all() and kept[:, 2].mean() < 1  # σ = 0 is the clean input; 3 × RMS moves some
    again, _, _ = common.pixel_noise_consistency(model, model.params, x[::-1], ids[::-1], sigmas, draws, seed=7,
                                                 chunk=2)  # other inputs share each chunk
    np.testing.assert_array_equal(again[::-1], kept)
    # the class shares of the same sweep (claim 4's pixel arm): σ = 0 gives the clean predictions'
    # histogram; each row sums to 1; σ = 3 counts every draw's prediction
    shares = common.pixel_noise_class_shares(model, model.params, x, ids, sigmas, draws, seed=7, chunk=2)
    assert shares.shape == (3, model.config.n_classes)
    np.testing.assert_allclose(shares[0], np.bincount(clean, minlength=model.config.n_classes) / len(clean))
    np.testing.assert_allclose(shares.sum(1), 1.0)
    pred, _, _ = common.pixel_noise_predictions(model, model.params, x, ids, sigmas, draws, seed=7, chunk=2)
    np.testing.assert_allclose(shares[2], np.bincount(pred[:, 2].ravel(), minlength=model.config.n_classes) / (5 * draws))
    with pytest.raises(ValueError, match="one id per input"):
        common.pixel_noise_consistency(model, model.params, x, ids[:3], sigmas, draws)


def test_input_noise_baseline_on_planted_cases():
    """Escape σ that is input-noise escape σ plus noise says nothing beyond the baselines (partial
    ρ ≈ 0: never "reproduced", though its raw ρ with the metric is high); escape σ with its own
    regularity signal keeps it ("reproduced")."""
    from reproduce import regularity

    rng = np.random.default_rng(0)
    n = 1000
    u, v = rng.normal(size=n), rng.normal(size=n)  # regularity the input sees / only the activations see
    cscore, speed = u + v + 0.5 * rng.normal(size=n), u + v + 0.5 * rng.normal(size=n)
    margin, input_escape = u + rng.normal(size=n), np.exp(u + 0.3 * rng.normal(size=n))
    sig = np.array([0.1, 1.0])
    shadow = np.log(input_escape) + 0.1 * rng.normal(size=n)  # activation noise = input noise
    own = 0.5 * np.log(input_escape) + v  # activation noise adds v
    outcomes = {}
    for name, log_escape in (("shadow", shadow), ("own", own)):
        r = regularity.input_noise_baseline(log_escape, input_escape, cscore, speed, margin, sig, 4, where="x",
                                            scale=1.0, n_boot=200)
        assert r["input_noise"]["extra_perturbed_forwards"] == n * 2 * 4
        assert r["input_escape_vs_cscore"]["rho"] > 0.3  # the input-noise baseline tracks the metric itself
        r.update(escape_vs_cscore=stats.spearman(log_escape, cscore, n_boot=200),
                 escape_vs_learning_speed=stats.spearman(log_escape, speed, n_boot=200))
        vs = regularity.verdicts(r)  # abstract's two, then the input-noise extensions (no margin-only keys)
        assert [x.source for x in vs] == ["abstract", "abstract", "extension", "extension"]
        outcomes[name] = [x.outcome for x in vs][-2:]
        if name == "shadow":
            assert r["escape_vs_cscore"]["rho"] > 0.3
            assert abs(r["escape_vs_cscore_given_margin_and_input"]["rho"]) < 0.1  # null: 0 ± 0.03 (n = 1000)
        else:
            assert r["escape_vs_cscore_given_margin_and_input"]["rho"] > 0.4
    assert "reproduced" not in outcomes["shadow"] and outcomes["own"] == ["reproduced"] * 2


def test_model_level_and_partial_statistics():
    from scipy.stats import mannwhitneyu, spearmanr

    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 8), rng.normal(0, 1, 7)
    t = stats.mann_whitney_exact(a, b)
    assert t["p"] == pytest.approx(mannwhitneyu(a, b, alternative="greater", method="exact").pvalue)
    assert t["auroc"] == pytest.approx(mannwhitneyu(a, b).statistic / 56)
    np.testing.assert_allclose(stats.mann_whitney_null(3, 2) * 10, [1, 1, 2, 2, 2, 1, 1])  # C(5, 2) = 10
    assert t["p_min"] == pytest.approx(1 / 6435) and stats.mann_whitney_exact([1, 2], [0])["critical_auroc"] is None
    # partial ρ: a covariate unrelated to both changes little; one that drives both removes it
    x, z = rng.normal(size=400), rng.normal(size=400)
    y = x + rng.normal(size=400)
    p = stats.partial_spearman(x, y, [z], n_boot=200)
    assert p["rho"] == pytest.approx(spearmanr(x, y).statistic, abs=0.03) and _in_ci(p, "rho")
    p0 = stats.partial_spearman(z + 0.1 * rng.normal(size=400), z + 0.1 * rng.normal(size=400), [z], n_boot=0)
    assert abs(p0["rho"]) < 0.15
    # clustered pooled AUROC: the point equals the plain pooled one; the interval is wider when
    # clusters differ (here each cluster has its own offset)
    pos = [rng.normal(o, 0.1, 50) for o in rng.normal(0.5, 1, 5)]
    neg = [rng.normal(o, 0.1, 50) for o in rng.normal(0, 1, 5)]
    c = stats.cluster_auroc(pos, neg, n_boot=300)
    plain = stats.auroc(np.concatenate(pos), np.concatenate(neg), n_boot=300)
    assert c["auroc"] == pytest.approx(plain["auroc"]) and c["hi"] - c["lo"] > 2 * (plain["hi"] - plain["lo"])


def test_verdict_power_and_rules():
    from reproduce import verdicts as V

    assert V.mde_spearman(1000) == pytest.approx(np.tanh(2.8016 / np.sqrt(997)), rel=1e-3)
    assert V.mde_interval(0.2, 0.4) == pytest.approx(0.1 * 2.8016 / 1.95996, rel=1e-3)
    assert V.mde_auroc(5, 5) > 0.9 > V.mde_auroc(14, 14)
    assert V.rank_test_rule(0.01, 1e-4, 0.8, 0.9) == "reproduced"
    assert V.rank_test_rule(0.3, 1e-4, 0.8, 0.9) == "not reproduced"
    assert V.rank_test_rule(0.3, 1e-4, 0.97, 0.9) == "inconclusive"  # could not see the claimed effect
    assert V.rank_test_rule(0.05, 0.05, 0.8, 0.9) == "inconclusive"  # cannot reach alpha
    assert V.effect_rule(-0.05, 0.08, 0.0, 0.1) == "not reproduced"
    assert V.effect_rule(-0.05, 0.3, 0.0, 0.1) == "inconclusive"
    assert V.effect_rule(0.02, 0.3, 0.0, 0.1) == "reproduced"
    assert V.spearman_rule({"lo": None, "hi": None}) == "inconclusive"


def test_ensemble_bookkeeping():
    m = ensembles.random_members(50, 3, 20, seed=0)
    assert m.shape == (3, 20) and all(len(set(r)) == 20 for r in m)
    res = ensembles.EnsembleResult(
        params=None, train_hits=np.array([[2, 0], [1, 0]]), train_seen=np.array([[2, 0], [2, 0]]),
        final_correct=np.array([[True, True], [False, True]]), in_train=np.array([[True, False], [True, False]]),
        epoch_train_accuracy=np.zeros((1, 2)), epochs_run=1, seconds=0.0)
    np.testing.assert_allclose(res.learning_speed(), [0.75, np.nan])
    np.testing.assert_allclose(res.holdout_accuracy(), [np.nan, 1.0])


def test_ensemble_resume_equals_uninterrupted(tmp_path):
    """A run killed after its first checkpointed epoch and rerun with the same run_dir resumes from
    RUN_DIR/ensemble-checkpoints (apex_jax.checkpoints.Checkpoints) and ends bit-identical to an
    uninterrupted run."""
    import jax

    from apex_jax import data as data_lib
    from reproduce import vit

    # the shapes of the quick zoo's training (6 micro ViTs, 18 steps of 32 per epoch): after the
    # quick run in this module its compiled epoch serves these runs too
    pool = data_lib.load_dataset("digits").subset(np.arange(600))
    model = vit.template(pool, "micro")
    x = vit.pixels(model, pool.inputs)
    members = ensembles.random_members(len(pool), 6, 18 * 32, seed=0)
    cfg = ensembles.EnsembleConfig(epochs=3, batch_size=32, seed=0)

    def train(run_dir=None, log=lambda m: None):
        return ensembles.train_ensemble(model, vit.fresh_params(model, range(6)), x, pool.labels, members, cfg,
                                        run_dir=run_dir, log=log)

    full = train()

    def killed(msg):
        if msg.startswith("epoch 2/"):  # after epoch 1's checkpoint, before epoch 2's
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, killed)
    logs = []
    resumed = train(tmp_path, logs.append)
    assert any("resumed ensemble training after epoch 1" in m for m in logs)
    assert resumed.epochs_run == full.epochs_run == 3
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for f in ("train_hits", "train_seen", "final_correct", "epoch_train_accuracy"):
        np.testing.assert_array_equal(getattr(full, f), getattr(resumed, f))


def test_the_package_does_not_reach_into_the_repository():
    """The installed package never imports the study: no `reproduce` command, no module of
    apex_jax touches sys.path or names scripts/ (the study runs as `python scripts/NAME.py`)."""
    from pathlib import Path

    import apex_jax
    from apex_jax import cli

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert "reproduce" not in sub.choices
    # assets.py alone puts a path on sys.path: the pinned, checksummed gguf wheel it downloads,
    # while the smollm2 asset is converted (never a folder of the repository).
    wheel_only = {"assets.py"}
    for path in Path(apex_jax.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import reproduce" not in text, path
        assert "sys.path" not in text or path.name in wheel_only, path


def test_label_noise_kinds_and_labels():
    from reproduce import zoo

    assert zoo.noise_kind(0.25) == "noise-025" and zoo.noise_share("noise-100") == 1.0
    assert zoo.noise_share("random") is None and zoo.noise_share("noise-x") is None
    with pytest.raises(ValueError, match="whole percent"):
        zoo.noise_kind(0.333)
    with pytest.raises(ValueError, match="noise-000"):
        zoo.get_group(zoo.ZooConfig.quick(), "noisy", "/nonexistent")
    y = np.arange(1000) % 10
    z = zoo.noisy_labels(y, 0.5, 10, seed=3)
    assert 0.4 < (z != y).mean() < 0.5  # 500 redrawn, about 1 in 10 of them to the true class
    assert (zoo.noisy_labels(y, 0.0, 10, 3) == y).all() and (z == zoo.noisy_labels(y, 0.5, 10, 3)).all()


def test_synapse_stability_and_inversion_rules_on_planted_cases():
    from reproduce.rules import synapse as rules
    from reproduce.verdicts import Verdict

    from apex_jax.synapse.silencing import random_control

    # stability over runs: 2/3 and no contradiction, or 2/3 against
    assert rules.stability(["reproduced"] * 7 + ["inconclusive"] * 2) == "reproduced"
    assert rules.stability_text(["reproduced"] * 7 + ["inconclusive"] * 2) == "7 of 9 runs: reproduced; 2: inconclusive"
    assert rules.stability(["reproduced"] * 6 + ["inconclusive"] * 3) == "reproduced"  # exactly 2/3
    assert rules.stability(["reproduced"] * 5 + ["inconclusive"] * 4) == "inconclusive"
    assert rules.stability(["reproduced"] * 8 + ["not reproduced"]) == "inconclusive"  # one run contradicts
    assert rules.stability(["not reproduced"] * 6 + ["reproduced"] * 3) == "not reproduced"
    assert rules.stability([]) == "inconclusive"

    # a judge over single-run task dicts: per task stability, over tasks all must reproduce
    def judge(tasks):
        o = rules._overall([t["o"] for t in tasks.values()])
        return Verdict(claim="c", outcome=o, rule="r", power="p", evidence=o, source="paper")

    runs = {"a": [{"o": "reproduced"}] * 3, "b": [{"o": "reproduced"}] * 2 + [{"o": "inconclusive"}]}
    v = rules._over_runs(judge, runs)
    assert v.outcome == "reproduced" and "b: 2 of 3 runs: reproduced; 1: inconclusive" in v.evidence
    runs["b"] = [{"o": "not reproduced"}] * 2 + [{"o": "reproduced"}]
    assert rules._over_runs(judge, runs).outcome == "not reproduced"

    # the last-block inversion: cells as SilencingResult.controls, from planted drops
    rng = np.random.default_rng(0)
    draws = 1.0 + 0.1 * rng.standard_normal(20)  # the within-block random drops

    def run(top, bottom, attribution, ks=(10.0, 20.0, 50.0)):
        cells = []
        for k in ks:
            for sel, drop in (("top", top), ("bottom", bottom), ("attribution", attribution)):
                for ab in ("zero", "mean"):
                    for score in ("margin", "kl"):
                        cells.append({"selection": sel, "ablation": ab, "score": score, "k_percent": k,
                                      "drop": drop, **random_control(drop, draws)})
        return {"inversion": cells}

    inverted, aligned = run(0.2, 2.0, 3.0), run(2.5, 0.1, 3.0)
    powerless = run(0.2, 2.0, 1.0)  # the positive control does not beat the random draws
    no_bottom = run(0.2, 0.1, 3.0)  # top below random but bottom hurts even less: not the inverted pattern
    assert rules.inversion_run(inverted)[0] == "reproduced" and rules.inversion_run(inverted)[1]["inverted"] == 3
    assert rules.inversion_run(aligned)[0] == "not reproduced"
    assert rules.inversion_run(powerless)[0] == "inconclusive"
    assert rules.inversion_run(no_bottom) == ("inconclusive", {"inverted": 0, "aligned": 0, "unresolved": 3, "n": 3,
                                                               "positive": 3})
    slightly_low = run(0.95, 2.0, 3.0)  # below the random mean but inside the draws: unresolved, not inverted
    assert rules.inversion_run(slightly_low)[1]["unresolved"] == 3
    v = rules.last_block_inversion({"t": [inverted, inverted, aligned]})
    assert v.outcome == "inconclusive" and v.source == "extension" and "2 of 3 runs: reproduced; 1: not reproduced" in v.evidence
    assert rules.last_block_inversion({"t": [inverted] * 3, "u": [inverted, inverted, powerless]}).outcome == "reproduced"
    assert rules.last_block_inversion({"t": [aligned] * 3}).outcome == "not reproduced"
    assert "1/21" in v.power
