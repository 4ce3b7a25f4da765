"""APEX, SYNAPSE and the CLI on decoders: the classifier token is the last real token.

Tiny random GPT-2 and Llama (grouped-query attention) models from tests/helpers/hf_decoder_reference.py
with a word-level tokenizer over the tiny sentiment task's words (no decoder tokenizer ships
offline; `encode` pads on the right with eos, as for GPT-2):
  (a) `extract_cls` = the hidden state at the last real token, computed directly (right- and
      left-padded batches of different lengths, full-length and head_only one-position sites);
  (b) silencing at the classifier token (engine, length buckets, left-padded input) = an explicit
      per-example Scale(0) at that position; attribution reads the same token;
  (c) `apex-jax finetune` (fresh score head on a causal LM folder) then apex/probe/silence/attack;
  (d) a verbalizer causal LM through `run_apex`; attacks read its label-token columns;
  (e) the SYNAPSE reference protocol (every block's output zeroed at once) at the last real token.
"""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import apex_jax
from apex_jax import cli
from apex_jax.engine.positions import (CLASSIFIER_TOKEN, classifier_index, per_example_sites, resolve, right_padded,
                                       single_position, token_index)
from apex_jax.interventions import Scale
from apex_jax.synapse import attacks, rankings, silencing
from apex_jax.synapse.features import extract_cls
from tests.helpers.hf_decoder_reference import make_model, to_left
from tests.helpers.tiny_text import FILLER, NEGATIVE, POSITIVE, sentiment_csv

TOL = 1e-5
WORDS = sorted({w for t in (*FILLER, *POSITIVE, *NEGATIVE, "one review : sentiment") for w in t.split()})
TEXTS = ["the film was great one", "awful", "honestly a boring one",
         "what a wonderful wonderful film honestly the cast is great and i found it lovely one "
         "the film was superb and the cast is brilliant",  # > 16 tokens: a second length bucket
         "i found it dreadful"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "<|endoftext|>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    cache = {}

    def get(family: str, head: str):
        if (family, head) not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-{head}")
            make_model(family, head, folder, seed=1)
            _tokenizer().save_pretrained(str(folder))
            cache[family, head] = folder
        return cache[family, head]

    return get


def _texts(family):
    return TEXTS if family == "llama" else TEXTS[:3] + TEXTS[4:]  # GPT-2 here has 16 positions


SITES = ("hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_k",
         "blocks.1.attn.hook_q", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post",
         "ln_final.hook_normalized", "head.hook_cls")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_extract_cls_reads_the_last_real_token(folders, family):
    model = apex_jax.load(folders(family, "seq"))
    right = model.encode(_texts(family))
    lengths = right["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 2 and right["attention_mask"][:, 0].all()
    full = model.apply(model.params, right, capture=SITES)
    last = lengths - 1
    # head_only: the last block after hook_k/v has one position; earlier sites every position
    assert single_position(model.config, "blocks.1.hook_resid_post", True)
    assert not single_position(model.config, "blocks.1.attn.hook_k", True)
    assert not single_position(model.config, "blocks.0.hook_resid_post", True)
    for batch in (right, to_left(right)):
        feats = extract_cls(model, model.params, batch, SITES, batch_size=2)
        for s in SITES:
            x = np.asarray(full.captured[s])
            want = x if s == "head.hook_cls" else x[np.arange(len(last)), last]
            want = want.reshape(len(last), -1)
            assert feats[s].shape == want.shape, s
            assert np.abs(feats[s] - want).max() < TOL * max(1.0, np.abs(want).max()), s
        np.testing.assert_array_equal(np.asarray(token_index(model.config, "hook_embed", batch["attention_mask"])),
                                      np.asarray(model.classifier_positions(batch)))
    # the head input is the final-normed last token
    np.testing.assert_allclose(feats["head.hook_cls"], feats["ln_final.hook_normalized"], atol=TOL)


def test_right_padded_moves_real_tokens_first():
    batch = {"input_ids": np.array([[0, 0, 5, 6], [7, 8, 9, 0]]), "attention_mask": np.array([[0, 0, 1, 1], [1, 1, 1, 0]])}
    out = right_padded(batch)
    np.testing.assert_array_equal(out["input_ids"], [[5, 6, 0, 0], [7, 8, 9, 0]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 0, 0], [1, 1, 1, 0]])
    same = right_padded(out)
    assert same["input_ids"] is out["input_ids"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_silencing_at_the_classifier_token_is_per_example_scale0(folders, family):
    model = apex_jax.load(folders(family, "seq"))
    right = model.encode(_texts(family))
    n, d = len(right["input_ids"]), model.config.d_model
    cls = np.asarray(model.classifier_positions(right))
    rng = np.random.default_rng(0)
    masks = (rng.random((4, d)) < 0.6).astype(np.float32)
    masks[0] = 0.0  # the clean model
    masks[1] = 1.0  # the whole classifier token
    ids = np.arange(n)
    # full length; one position (inside the head_only last block); full length again (the last
    # block's output alone: the engine's prefix then runs every block, the suffix none)
    for site in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"):
        res = silencing.mask_sweep(model, model.params, to_left(right), ids, site, masks,
                                   progress=False, grid_per_step=2)
        assert res.counts.sum() == n * len(masks)
        preds = silencing.predictions(res)
        for g, mask in enumerate(masks):
            iv = Scale(jnp.zeros(()), positions=jnp.asarray(cls)[:, None], neurons=jnp.asarray(mask))
            logits = np.asarray(model.apply(model.params, right, {site: iv}).logits)
            np.testing.assert_array_equal(preds[:, g], logits.argmax(-1), err_msg=f"{site} mask {g}")
        clean = np.asarray(model.apply(model.params, right).logits).argmax(-1)
        np.testing.assert_array_equal(res.clean, clean)


def test_engine_resolves_the_classifier_token_per_site(folders):
    """per_example_sites: a decoder's sites at full length (not the head_only last block's
    one-position sites, nor head sites); encoders none. resolve: [batch, 1] there, [0] at other
    position sites, None at head sites; other interventions pass unchanged."""
    model = apex_jax.load(folders("llama", "seq"))
    cfg = model.config
    assert per_example_sites(cfg, ("blocks.0.hook_resid_post", "blocks.1.hook_resid_mid", "head.hook_cls")) == (
        "blocks.0.hook_resid_post",)
    # the last block's output alone: the prefix runs every block at full length
    assert per_example_sites(cfg, ("blocks.1.hook_resid_post",)) == ("blocks.1.hook_resid_post",)
    index = jnp.array([3, 1], jnp.int32)
    plain = Scale(jnp.ones(()))
    pert = {s: Scale(jnp.zeros(()), positions=CLASSIFIER_TOKEN) for s in ("hook_embed", "blocks.1.hook_resid_mid",
                                                                           "head.hook_cls")}
    out = resolve({**pert, "blocks.0.hook_resid_post": plain}, index, ("hook_embed",))
    np.testing.assert_array_equal(out["hook_embed"].positions, [[3], [1]])
    np.testing.assert_array_equal(out["blocks.1.hook_resid_mid"].positions, [0])
    assert out["head.hook_cls"].positions is None and out["blocks.0.hook_resid_post"] is plain
    with pytest.raises(TypeError, match="resolved by the sweep engine"):
        np.asarray(CLASSIFIER_TOKEN)


def test_silencing_score_logits_match_explicit(folders):
    """Stronger than argmax: the perturbation as the engine resolves it (the classifier token of
    each input), applied with head_only to the right-padded batch, gives the logits of the
    explicit per-example Scale(0)."""
    model = apex_jax.load(folders("llama", "seq"))
    batch = model.encode(TEXTS)
    cls = model.classifier_positions(batch)
    d = model.config.d_model
    mask = (np.random.default_rng(1).random(d) < 0.5).astype(np.float32)
    for site in ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"):
        pert = silencing.MaskPerturbation((site,), "cls", "zero")
        raw = pert({"mask": {site: mask}}, None)
        assert raw[site].positions is CLASSIFIER_TOKEN
        index = jnp.asarray(classifier_index(model.config, batch, len(cls)))
        resolved = resolve(raw, index, per_example_sites(model.config, (site,)))
        got = model.apply(model.params, batch, resolved, head_only=True).logits
        iv = Scale(jnp.zeros(()), positions=cls[:, None], neurons=jnp.asarray(mask))
        want = model.apply(model.params, batch, {site: iv}).logits
        assert np.abs(np.asarray(got) - np.asarray(want)).max() < TOL
        base = model.apply(model.params, batch).logits
        assert np.abs(np.asarray(want) - np.asarray(base)).max() > 1e-4  # the silencing does something


def test_attribution_reads_the_classifier_token(folders):
    model = apex_jax.load(folders("llama", "seq"))
    batch = model.encode(TEXTS)
    site = "blocks.0.hook_resid_post"
    r_right = rankings.attribution_ranking(model, model.params, batch, site, batch_size=2)
    r_left = rankings.attribution_ranking(model, model.params, to_left(batch), site, batch_size=5)
    np.testing.assert_allclose(r_right.scores, r_left.scores, rtol=1e-4, atol=1e-7)
    # explicit: |a · ∂logit_pred/∂a| at the last real token
    cls = np.asarray(model.classifier_positions(batch))
    out = model.apply(model.params, batch, capture=(site,))
    pred = np.asarray(out.logits).argmax(-1)
    act = np.asarray(out.captured[site])

    def f(a):
        from apex_jax.interventions import Replace

        o = model.apply(model.params, batch, {site: Replace(a)})
        return jnp.take_along_axis(o.logits, jnp.asarray(pred)[:, None], 1).sum()

    g = np.asarray(jax.grad(f)(jnp.asarray(act)))
    rows = np.arange(len(cls))
    want = np.abs(act[rows, cls] * g[rows, cls]).mean(0)
    np.testing.assert_allclose(r_right.scores, want, rtol=1e-4, atol=1e-7)


def test_head_weights_of_decoders(folders):
    from apex_jax.models import verbalizer

    seq = apex_jax.load(folders("gpt2", "seq"))
    kernel, bias = attacks.head_weights(seq.params, seq.config)
    assert kernel.shape == (seq.config.d_model, seq.config.n_classes) and not bias.any()
    batch = seq.encode(TEXTS[:3])
    out = seq.apply(seq.params, batch, capture=("head.hook_cls",))
    np.testing.assert_allclose(attacks.apply_head(np.asarray(out.captured["head.hook_cls"]), kernel, bias),
                               np.asarray(out.logits), atol=TOL)
    with pytest.raises(ValueError, match="no bias"):
        attacks.manipulated_params(seq.params, kernel, bias + 1)
    new = attacks.manipulated_params(seq.params, kernel * 2, bias)
    np.testing.assert_allclose(np.asarray(seq.apply(new, batch).logits), 2 * np.asarray(out.logits), rtol=1e-5)
    for family in ("gpt2", "llama"):  # tied and untied LM heads
        clf = verbalizer(apex_jax.load(folders(family, "lm")), ["great", "awful"], prompt="review : {text} sentiment :")
        kernel, bias = attacks.head_weights(clf.params, clf.config)
        assert kernel.shape == (clf.config.d_model, 2)
        b = clf.encode(TEXTS[:3])
        o = clf.apply(clf.params, b, capture=("head.hook_cls",))
        np.testing.assert_allclose(attacks.apply_head(np.asarray(o.captured["head.hook_cls"]), kernel, bias),
                                   np.asarray(o.logits), atol=1e-4)


def test_verbalizer_runs_through_apex(folders):
    from apex_jax.apex import run_apex
    from apex_jax.models import verbalizer

    clf = verbalizer(apex_jax.load(folders("llama", "lm")), ["great", "awful"], prompt="review : {text} sentiment :")
    batch = clf.encode(TEXTS)
    sigmas = [0.0, 0.5, 4.0]
    res = run_apex(clf, clf.params, to_left(batch), np.arange(len(TEXTS)), sigmas, draws=4,
                   progress=False, sites=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    counts = res.sweep.counts
    assert counts.shape == (len(TEXTS), 3, 2) and counts.sum() == len(TEXTS) * 3 * 4
    np.testing.assert_array_equal(res.consistency[:, 0], 1.0)  # σ = 0 keeps every prediction
    clean = np.asarray(clf.apply(clf.params, batch).logits).argmax(-1)
    np.testing.assert_array_equal(res.sweep.clean, clean)
    assert all(np.isfinite(v) and v > 0 for v in res.site_rms.values())


def test_cli_on_a_decoder(folders, tmp_path, capsys):
    """`apex-jax finetune` gives a causal LM folder a fresh score head; apex, probe, silence and
    attack then run on the fine-tuned decoder."""
    task = sentiment_csv(tmp_path / "task.csv", 80)
    run = tmp_path / "ft"
    assert cli.main(["finetune", str(folders("gpt2", "lm")), "--data", str(task), "--out", str(run),
                     "--epochs", "1", "--batch-size", "8"]) == 0
    metrics = json.loads((run / "summary.json").read_text())["results"]
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    folder = run / "model"
    model = apex_jax.load(folder)
    assert model.config.is_decoder and model.config.n_classes == 2 and not model.config.lm_head

    ap = tmp_path / "apex"
    assert cli.main(["apex", str(folder), "--data", str(task), "--out", str(ap), "--n", "5", "--draws", "4",
                     "--sigmas", "0,2", "--quiet"]) == 0
    rows = list(csv.DictReader(open(ap / "samples.csv")))
    assert len(rows) == 5 and all(float(r["kept_sigma_0"]) == 1.0 for r in rows)
    assert json.loads((ap / "timing.json").read_text())["perturbed_forwards"] == 5 * 2 * 4

    probe = tmp_path / "probe"
    assert cli.main(["probe", str(folder), "--data", str(task), "--out", str(probe), "--n-train", "40",
                     "--n", "16", "--steps", "30"]) == 0
    prow = list(csv.DictReader(open(probe / "probes.csv")))
    assert [r["site"] for r in prow] == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
                                         "concat", "head.hook_cls"]
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in prow)
    agree = list(csv.DictReader(open(probe / "ranking_agreement.csv")))
    assert len(agree) == 4

    silence = tmp_path / "silence"
    assert cli.main(["silence", str(folder), "--data", str(task), "--probe", str(probe), "--out", str(silence),
                     "--n", "8", "--k", "10,100", "--random", "2", "--asymmetry-k", "10", "--quiet"]) == 0
    table = list(csv.DictReader(open(silence / "silencing.csv")))
    # sites x k x (top, attribution (the default positive control), bottom, 2 classes, 2 random)
    assert len(table) == 3 * 2 * (1 + 1 + 1 + 2 + 2)
    for site in {r["site"] for r in table}:  # k = 100%: every selection silences the whole token
        assert len({r["accuracy"] for r in table if r["site"] == site and r["k_percent"] == "100"}) == 1
    assert all(0 <= float(r["accuracy"]) <= 1 for r in table)

    attack = tmp_path / "attack"
    assert cli.main(["attack", str(folder), "--data", str(task), "--probe", str(probe), "--out", str(attack),
                     "--n", "8", "--target", "1"]) == 0
    arows = list(csv.DictReader(open(attack / "attacks.csv")))
    assert len({r["accuracy"] for r in arows if float(r["magnitude"]) == 0}) == 1
    assert "flip" in capsys.readouterr().out


def test_silencing_modes_and_joint_sites_on_a_decoder(folders):
    """mean-ablation, noise (σ = 0 is the identity) and a joint sweep over a full-length and a
    one-position site, all at each input's classifier token, across two length buckets."""
    from apex_jax.interventions import Replace

    model = apex_jax.load(folders("llama", "seq"))
    batch = model.encode(TEXTS)
    n, d = len(TEXTS), model.config.d_model
    cls = jnp.asarray(model.classifier_positions(batch))[:, None]
    ids = np.arange(n)
    rng = np.random.default_rng(3)
    masks = (rng.random((2, d)) < 0.7).astype(np.float32)
    clean = np.asarray(model.apply(model.params, batch).logits).argmax(-1)

    noise = silencing.mask_sweep(model, model.params, batch, ids, "blocks.0.hook_resid_post", masks,
                                 mode="noise", sigma=0.0, draws=3, progress=False)
    np.testing.assert_array_equal(noise.counts.argmax(-1), np.repeat(clean[:, None], 2, 1))
    assert noise.counts.sum() == n * 2 * 3

    site = "blocks.0.hook_resid_post"
    means = {site: rng.normal(size=d).astype(np.float32) * 3}
    res = silencing.mask_sweep(model, model.params, batch, ids, site, masks, mode="mean", means=means,
                               progress=False)
    for g, m in enumerate(masks):
        iv = Replace(jnp.asarray(means[site]), positions=cls, neurons=jnp.asarray(m))
        want = np.asarray(model.apply(model.params, batch, {site: iv}).logits).argmax(-1)
        np.testing.assert_array_equal(silencing.predictions(res)[:, g], want)

    joint = {"blocks.0.hook_resid_post": masks, "blocks.1.hook_resid_post": masks[::-1].copy()}
    res = silencing.mask_sweep(model, model.params, batch, ids, None, joint, progress=False)
    for g in range(2):
        p = {s: Scale(jnp.zeros(()), positions=cls, neurons=jnp.asarray(m[g])) for s, m in joint.items()}
        want = np.asarray(model.apply(model.params, batch, p).logits).argmax(-1)
        np.testing.assert_array_equal(silencing.predictions(res)[:, g], want)


def test_cli_verbalizer_flags(folders, tmp_path, capsys):
    """--labels/--prompt read a causal LM through label tokens on the command line: the clean
    predictions are those of `verbalizer` in Python, the manifest records the label tokens and
    the prompt, and bad flags exit 2 naming the problem."""
    from apex_jax import data as data_lib
    from apex_jax.models import verbalizer

    lm = folders("llama", "lm")
    task = sentiment_csv(tmp_path / "task.csv", 40)
    flags = ["--labels", "awful,great", "--prompt", "review : {text} sentiment :"]
    ap = tmp_path / "apex"
    assert cli.main(["apex", str(lm), "--data", str(task), "--out", str(ap), "--n", "6", "--draws", "2",
                     "--sigmas", "0,2", "--max-length", "16", "--quiet", *flags]) == 0
    clf = verbalizer(apex_jax.load(lm), ["awful", "great"], prompt="review : {text} sentiment :")
    ds = data_lib.get_split(str(task), "all", n=6, seed=0)  # a file: used whole
    want = np.asarray(clf.apply(clf.params, clf.encode(list(ds.inputs), max_length=16)).logits).argmax(-1)
    rows = list(csv.DictReader(open(ap / "samples.csv")))
    assert [int(r["clean_prediction"]) for r in rows] == want.tolist()
    settings = json.loads((ap / "run.json").read_text())["settings"]
    assert settings["label_token_ids"] == list(clf.config.label_token_ids)
    assert settings["prompt"] == "review : {text} sentiment :"

    probe = tmp_path / "probe"
    assert cli.main(["probe", str(lm), "--data", str(task), "--out", str(probe), "--n-train", "20", "--n", "8",
                     "--steps", "10", "--max-length", "16", "--quiet", *flags]) == 0
    prow = list(csv.DictReader(open(probe / "probes.csv")))
    assert prow[-1]["site"] == "head.hook_cls" and len(prow) == 5
    capsys.readouterr()

    bad = [(["--prompt", "x {text}"], "--labels"), (["--labels", "awful,,great"], "one non-empty word"),
           (["--labels", "awful,great", "--prompt", "no slot"], "{text}")]
    for extra, needle in bad:
        rc = cli.main(["apex", str(lm), "--data", str(task), "--out", str(tmp_path / "bad"), "--n", "2",
                       "--quiet", *extra])
        assert rc == 2 and needle in capsys.readouterr().err


def test_reference_arm_zeroes_every_layer_at_the_last_real_token(folders):
    """SYNAPSE's reference protocol on a decoder (`concat_silencing_experiment`: one ranking over
    every block's output concatenated, the top-k% zeroed at every block at once): each selection's
    margins equal an explicit Scale(0) at each input's last real token of every block, on a
    left-padded batch over two length buckets; the same neurons zeroed at position 0 instead
    give other margins (the test can fail)."""
    model = apex_jax.load(folders("llama", "seq"))
    right = model.encode(TEXTS)
    n, d, C = len(TEXTS), model.config.d_model, model.config.n_classes
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layers)]
    labels = np.arange(n) % C
    W = np.random.default_rng(4).normal(size=(C, len(sites) * d))
    cfg = silencing.SilenceConfig(k_levels=(50.0,), n_random=2, bottom=True, per_class=True, asymmetry_k=50.0)
    res = silencing.concat_silencing_experiment(model, model.params, to_left(right), labels, np.arange(n), W,
                                                sites, cfg, progress=False)
    sels, masks = silencing.selections_and_masks(rankings.global_ranking(W).scores, np.abs(W), cfg, seed=cfg.seed,
                                                 n_layers=len(sites))
    assert [s.kind for s in res.layers[0].selections] == [s.kind for s in sels]
    cls = jnp.asarray(model.classifier_positions(right))[:, None]
    assert len(set(np.asarray(cls)[:, 0].tolist())) > 1  # inputs of different lengths

    def margins(p):
        logits = np.asarray(model.apply(model.params, right, p).logits, np.float64)
        true = logits[np.arange(n), labels]
        other = np.where(np.eye(C, dtype=bool)[labels], -np.inf, logits).max(1)
        return true - other

    np.testing.assert_allclose(res.clean_margin, margins(None), atol=1e-4)
    moved = 0
    for g, mask in enumerate(masks):
        per_site = rankings.split_concat(mask[None], sites, d)
        at = lambda pos: {s: Scale(jnp.zeros(()), positions=pos, neurons=jnp.asarray(per_site[s][0])) for s in sites}
        want = margins(at(cls))
        np.testing.assert_allclose(res.layers[0].margin[:, g], want, atol=1e-4, err_msg=f"selection {g}")
        moved += np.abs(margins(at(jnp.array([0]))) - want).max() > 1e-3
    assert moved == len(masks)
