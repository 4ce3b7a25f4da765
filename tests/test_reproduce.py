"""Smoke test of the reproduction scripts: every claim in --quick mode (digits, micro ViTs), the
report, and the sanity of their numbers; plus small checks of the library pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reproduce import backdoor, common, ensembles, stats  # scripts/reproduce/ (pyproject: pytest pythonpath)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    from reproduce import run

    root = tmp_path_factory.mktemp("reproduce")
    reports, work = root / "reports", root / "work"
    run("all", ["--quick", "--quiet", "--reports", str(reports), "--work", str(work)])
    summaries = {n: json.loads((reports / n / "summary.json").read_text())
                 for n in ("regularity", "regularity_text", "random_labels", "transitions", "backdoor_bias",
                           "synapse")}
    return reports, work, summaries


def _in_ci(d: dict, key: str) -> bool:
    return d["lo"] - 1e-9 <= d[key] <= d["hi"] + 1e-9


def test_outputs_exist(quick):
    reports, _, _ = quick
    for name, files in {"regularity": ["samples.csv", "regularity.png"],
                        "regularity_text": ["samples.csv", "regularity_text.png"],
                        "random_labels": ["models.csv", "samples.csv", "random_labels.png"],
                        "transitions": ["pairs.csv", "transitions.png"],
                        "backdoor_bias": ["class_shares.csv", "backdoor_bias.png"],
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
        assert abs(sum(t["top10_layer_share"]) - 1) < 1e-9 and np.array(t["asymmetry"]).shape == (t["n_classes"],) * 2
        assert {c["site"] for c in t["controls"]} == ({"all layers", "all layers + pooler"} if t["pooler"]
                                                      else {"all layers"})
    assert {v["outcome"] for v in syn["results"]["verdicts"]} <= {"reproduced", "not reproduced", "inconclusive"}


def test_random_label_numbers(quick):
    _, _, s = quick
    r = s["random_labels"]["results"]
    assert all(0 <= a <= 1 for a in r["pair_auroc"])
    assert _in_ci(r["pair_auroc_mean"], "mean") and _in_ci(r["model_auroc_median_escape"], "auroc")
    clean, rand = r["models"]["clean"], r["models"]["random"]
    assert min(m["test_accuracy"] for m in clean) > 0.6
    assert max(m["test_accuracy"] for m in rand) < 0.3  # random labels: chance on the test set
    assert min(m["train_accuracy"] for m in rand) > 0.3  # but they learned their own labels


def test_transition_numbers(quick):
    _, _, s = quick
    t = s["transitions"]
    r = t["results"]
    T, K = np.array(t["transition_matrix"]), np.array(t["confusion_matrix"])
    assert T.shape == K.shape == (10, 10) and not np.diag(T).any() and not np.diag(K).any()
    assert r["n_transitions"] == T.sum() > 0
    rho = r["spearman_offdiagonal"]
    assert -1 <= rho["rho"] <= 1 and _in_ci(rho, "rho")
    assert r["top_pairs"] and all(p["from"] != p["to"] for p in r["top_pairs"])
    assert all(f >= 0.1 for f in r["flip_rate_at_small_sigma"])


def test_backdoor_numbers(quick):
    _, _, s = quick
    r = s["backdoor_bias"]["results"]
    assert all(m["attack_success_rate"] > 0.8 for m in r["models"]["backdoor"])  # the backdoor works
    assert r["clean_accuracy"]["backdoor"]["mean"] > 0.6
    for spec in ("resid_post", "embed"):
        site = r["sites"][spec]
        for key in ("auroc_target_known", "auroc_max_share"):
            assert 0 <= site[key]["auroc"] <= 1 and _in_ci(site[key], "auroc")
        shares = np.array(s["backdoor_bias"]["class_shares_large_sigma"][spec]["backdoor"])
        np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-6)


def test_readme_is_filled_from_the_summaries(quick):
    reports, _, s = quick
    text = (reports / "README.md").read_text()
    import re

    assert "Quick run" in text and not re.search(r"\{[a-z_]+\}", text)  # every placeholder filled
    m = s["random_labels"]["results"]["pair_auroc_mean"]
    assert f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]" in text
    for name in ("regularity", "regularity_text"):
        rho = s[name]["results"]["escape_vs_cscore"]
        assert f"{rho['rho']:.3f} [{rho['lo']:.3f}, {rho['hi']:.3f}]" in text
    assert text.count("**Verdict:") == 6
    probe = s["synapse"]["results"]["domains"]["vader-tweets"]["probes"]
    assert f"| vader-tweets | {probe[0]['test_accuracy']:.3f} | {probe[1]['test_accuracy']:.3f} |" in text


def test_summaries_name_their_escape_sigma_estimator(quick):
    reports, _, s = quick
    for name in ("regularity", "regularity_text", "random_labels"):  # every summary holding an escape σ
        assert s[name]["escape_sigma_estimator"] == common.ESCAPE_SIGMA_ESTIMATOR == "log_sigma_interpolation"
    text = (reports / "README.md").read_text()
    assert text.count("Escape σ: log-σ interpolation between the last grid σ at/above and the first below") == 3


def test_claim_modules_own_their_sections(tmp_path):
    from reproduce import CLAIMS, random_labels, regularity, report, transitions

    modules = report.claim_modules()
    assert [m.NAME for m in modules] == list(CLAIMS)
    for m in modules:
        assert isinstance(m.CLAIM, int) and m.TITLE and "{verdict}" in m.SECTION
        assert callable(m.main) and callable(m.section) and m.verdict.__doc__
    # the rules on hand-made results: intervals above / straddling / below the bound
    up, mid, down = {"rho": 0.5, "lo": 0.2, "hi": 0.7}, {"rho": 0.1, "lo": -0.2, "hi": 0.4}, {"lo": -0.6, "hi": -0.1}
    assert regularity.verdict({"escape_vs_cscore": up, "escape_vs_learning_speed": up})[0] == "reproduced"
    assert regularity.verdict({"escape_vs_cscore": up, "escape_vs_learning_speed": mid})[0] == "partly reproduced"
    assert regularity.verdict({"escape_vs_cscore": mid, "escape_vs_learning_speed": mid})[0] == "not reproduced"
    assert random_labels.verdict({"pair_auroc_mean": {"lo": 0.6, "hi": 0.9}})[0] == "reproduced"
    assert random_labels.verdict({"pair_auroc_mean": {"lo": 0.1, "hi": 0.4}})[0] == "opposite direction"
    assert random_labels.verdict({"pair_auroc_mean": {"lo": None, "hi": None}})[0] == "inconclusive"
    assert transitions.verdict({"spearman_offdiagonal": down})[0] == "not reproduced"
    # a claim without a summary gets a "not run" row and section
    text = report.build(tmp_path)
    assert text.count("| not run |") == len(CLAIMS) and "**Verdict:" not in text


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

    pool = data_lib.load_dataset("digits").subset(np.arange(256))
    model = vit.template(pool, "micro")
    x = vit.pixels(model, pool.inputs)
    members = ensembles.random_members(len(pool), 2, 128, seed=0)
    cfg = ensembles.EnsembleConfig(epochs=3, batch_size=32, seed=0)

    def train(run_dir=None, log=lambda m: None):
        return ensembles.train_ensemble(model, vit.fresh_params(model, [0, 1]), x, pool.labels, members, cfg,
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


def test_cli_reproduce_without_the_study(tmp_path):
    """Installed from a wheel (no scripts/ beside the package), `apex-jax reproduce` exits 2 and
    says where the study lives."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import apex_jax

    shutil.copytree(Path(apex_jax.__file__).parent, tmp_path / "apex_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-c", "import sys; from apex_jax.cli import main; "
                        "sys.exit(main(['reproduce', 'report']))"],
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "scripts/" in r.stderr and "not installed with the package" in r.stderr
