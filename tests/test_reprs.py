"""Result objects print compactly: shapes and headline numbers, never whole arrays."""

from __future__ import annotations

import numpy as np

from apex_jax import apex, synapse
from apex_jax.engine import SweepResult, plan_sweep
from apex_jax.models import create
from apex_jax.synapse import probes as probes_lib
from apex_jax.synapse import silencing

LIMIT = 600


def _short(obj, *needles):
    text = repr(obj)
    assert len(text) < LIMIT, (len(text), text)
    assert "array(" not in text and "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _sweep(n=32, G=8, C=3, draws=32, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(draws, [0.6, 0.3, 0.1], size=(n, G))
    return SweepResult(counts, counts[:, 0].argmax(-1), draws, 1.5, n * G * draws, {"tag": "x" * 1000},
                       margin_sum=rng.normal(size=(n, G)), kl_sum=rng.random((n, G)))


def test_apex_results():
    sweep = _sweep()
    _short(sweep, "SweepResult(", "inputs=32", "grid=8", "classes=3", "draws=32", "share_kept=")
    sigmas = np.geomspace(0.02, 4, 8)
    res = apex.ApexResult(sigmas, [f"blocks.{i}.hook_resid_post" for i in range(6)], sweep, 0.5, None)
    esc = res.escape_sigma()
    _short(res, "ApexResult(", "inputs=32", "sigmas=8 [0.02 … 4]", "sites=6", "draws=32",
           f"median_escape_sigma={float(np.median(esc)):.3g}")
    ae = apex.AdaptiveEscape(np.array([0.5, 1.0, np.inf] * 20), np.zeros(60), 0.05, 4, 1234, 2.0)
    _short(ae, "AdaptiveEscape(", "inputs=60", "escaped=40", "median_escape_sigma=1", "rounds=4",
           "perturbed_forwards=1234")


def test_sweep_plan():
    model = create({"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64},
                   num_labels=2)
    mask = (np.arange(40)[None] < np.arange(1, 41)[:, None]).astype(np.int32)  # lengths 1..40
    plan = plan_sweep(model, {"input_ids": np.ones_like(mask), "attention_mask": mask}, 8, 16,
                      ["blocks.0.hook_resid_post"], memory_budget=2**20)
    _short(plan, "SweepPlan(", "inputs=40", "grid=8", "draws=16", f"units={plan.units}", "blocks=40 [8 … 40]")


def _metrics(G, C=2, n=50, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    return labels, silencing.metrics(labels, rng.integers(0, C, (n, G)), C)


def test_silencing_result():
    cfg = synapse.SilenceConfig(n_random=20)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(6)]
    labels, clean = _metrics(1)
    layers = []
    for i, site in enumerate(sites):
        sels = [silencing.Selection("random", k, draw=r) for k in cfg.k_levels for r in range(cfg.n_random)]
        _, m = _metrics(len(sels), seed=i + 1)
        counts = np.zeros((len(labels), len(sels), 2), np.int64)
        layers.append(silencing.LayerResult(site, sels, m, counts, np.zeros((len(labels), len(sels))),
                                            np.zeros((len(labels), len(sels)))))
    res = silencing.SilencingResult(cfg, clean, clean.accuracy[:1].astype(int), layers, 3.0, 12345,
                                    np.zeros(len(labels)))
    _short(res, "SilencingResult(", "sites=6 [blocks.0.hook_resid_post", f"clean_accuracy={clean.accuracy[0]:.3g}",
           "n_random=20", "perturbed_forwards=12345")
    _short(layers[0], "LayerResult(", "site='blocks.0.hook_resid_post'", f"selections={len(layers[0].selections)}")
    _short(clean, "Metrics(", "grid=1", "classes=2")


def test_probes_and_attacks():
    rng = np.random.default_rng(0)
    C, d = 3, 384
    pm = probes_lib.ProbeMetrics(0.875, 0.8, 0.81, (0.9, 0.8, 0.7), 0.99, 0.123)
    probe = probes_lib.Probe(rng.normal(size=(C, d)).astype(np.float32), np.zeros(C, np.float32),
                             np.zeros(d, np.float32), np.ones(d, np.float32), pm)
    _short(pm, "ProbeMetrics(", "accuracy=0.875", "loss=0.123", "classes=3")
    _short(probe, "Probe(", "classes=3", "width=384", "accuracy=0.875")
    sites = tuple(f"blocks.{i}.hook_resid_post" for i in range(12))
    ps = probes_lib.ProbeSet({s: probe for s in sites}, sites, C, probes_lib.ProbeConfig())
    _short(ps, "ProbeSet(", "probes=12 [blocks.0.hook_resid_post", "classes=3", "best_accuracy=0.875")
    rows = [{"attack": a, "magnitude": float(m), "flip_to_target": m / 10, "accuracy": 0.5, "target_share": 0.5}
            for a in ("logit_bias", "column_push", "bit_flip_30") for m in range(8)]
    res = synapse.AttackResult(rows=rows, target=1, k_neurons=38, neurons=list(range(38)), clean_accuracy=0.9,
                               clean_target_share=0.4, median_clean_margin=2.5,
                               bias_to_redirect={"0.5": 1.0}, stable_sign_neurons=3, sign_share_of_top=0.8)
    _short(res, "AttackResult(", "target=1", "k_neurons=38", "attacks=3", "rows=24", "clean_accuracy=0.9",
           "max_flip_to_target=0.7")
