"""The SYNAPSE run layer: probe, silence, attack. Each reads a model and a data set, writes CSV
tables, summary.json (deterministic: settings and results, no timings), timing.json and PNG plots
into its run folder, and returns the summary.

    probe   RUN/probes/ (orbax), head_probe/, probes.csv, rankings.csv, ranking_agreement.csv,
            probe_accuracy.png
    silence RUN2/silencing.csv, controls.csv, curves.csv, asymmetry.csv, silencing_curves.png,
            class_asymmetry.png (scores: accuracy, weighted F1, mean label margin, mean KL)
    attack  RUN3/attacks.csv, attack_curves.png

Each takes a model and data by name or in memory with its command's settings object
(`apex_jax.settings`), checks them like the command line does, and writes through the one
run-folder writer (`apex_jax.runs`: run.json, summary.json, timing.json, index.html).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from apex_jax import batching, inputs, runs
from apex_jax.data import Dataset
from apex_jax.engine.mesh import model_parallel_of, shard_params, sweep_mesh
from apex_jax.engine.reprs import compact_repr, names
from apex_jax.engine.store import arrays_digest, params_digest
from apex_jax.errors import InputError
from apex_jax.models.model import Model
from apex_jax.progress import Progress, tracker
from apex_jax.settings import MAX_FORWARDS, AttackSettings, ProbeSettings, SilenceSettings
from apex_jax.sites import HEAD_SITES, parse_sites
from apex_jax.sites import HEAD_INPUT_SITE as HEAD_SITE  # the attacks' probe reads the classifier input
from apex_jax.synapse import plots, rankings
from apex_jax.synapse.attacks import AttackConfig, attack_experiment
from apex_jax.synapse.features import extract_cls
from apex_jax.synapse.probes import CONCAT, ProbeConfig, ProbeSet, train_probes
from apex_jax.tables import frame_from_dicts
from apex_jax.synapse.silencing import CONTROLS_FORMAT, SilenceConfig, silencing_experiment


# ----------------------------------------------------------------------------- shared
Log = Callable[[str], None] | None


def _open(command: str, out: str | Path, record: dict, overwrite: bool, log: Log, inputs: tuple) -> runs.Run:
    return runs.open_run(out, command, record, overwrite=overwrite, log=log, inputs=inputs)


def _model(model: Model | str, settings: Any) -> Model:
    return inputs.model(model, dtype=settings.dtype, labels=settings.labels, prompt=settings.prompt)


# Inputs a run reads when its n is left unset: the first this many of the split, or the whole split
# when it is smaller (only an explicit n larger than the data is refused).
DEFAULT_N = {"probe_train": 2000, "probe_test": 500, "silence": 200, "attack": 200}


def _examples(data: Any, split: str, n: int | None, default: int, seed: int) -> Dataset:
    """The examples of a run: `n` of the split as asked (more than it has is refused), or, with n
    unset, the first `default` of it or all of it when smaller; a `Dataset` as given."""
    if n is not None or isinstance(data, Dataset):
        return inputs.dataset(data, split, n, seed)
    ds = inputs.dataset(data, split, None, seed)
    return ds if len(ds) <= default else ds.subset(np.arange(default))


def probe_run_identity(probe: str | Path) -> str | None:
    """sha256 of a probe run's manifest settings (None if it has none): a silence or attack run
    on re-fitted probes is another run."""
    try:
        m = runs.read_manifest(probe)
    except InputError:
        return None
    return None if m is None else hashlib.sha256(json.dumps(m["settings"], sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- probe
@dataclasses.dataclass
class ProbeResult:
    """What `probe_run` found, in memory: the probes (with their provenance: the probed weights'
    digest and the class order, which `silence_run` / `attack_run` check) and the tables of the
    run folder. Pass it (or `probe_run`'s returned dict) to `silence_run` / `attack_run` as
    `probe` instead of the folder."""

    probes: ProbeSet  # one probe per site (+ CONCAT)
    head: ProbeSet | None  # the classifier-input (head.hook_cls) probe; None for a head-less model
    rankings: list[dict]  # rankings.csv: top neurons per site (global and per class)
    agreement: list[dict]  # ranking_agreement.csv: Spearman of probe vs activation × gradient rankings
    n_train: int
    n_test: int

    def __repr__(self) -> str:
        acc = {r["site"]: r["test_accuracy"] for r in self.probes.rows()}
        best = max(acc, key=acc.get)
        head = None if self.head is None else self.head[HEAD_SITE].metrics.accuracy
        return compact_repr("ProbeResult", sites=names(list(self.probes.sites)), classes=self.probes.n_classes,
                            n_train=self.n_train, n_test=self.n_test, best_site=best, best_accuracy=acc[best],
                            head_accuracy=head)

    def table(self) -> list[dict]:
        """probes.csv's rows: every layer probe, then the classifier-input probe (if any)."""
        return self.probes.rows() + ([] if self.head is None else self.head.rows())

    def to_pandas(self):
        """probes.csv as a pandas DataFrame (ImportError without pandas)."""
        return frame_from_dicts(self.table())


def _layer_sites(model: Model, spec: str, name: str) -> list[str]:
    """The probed sites of `spec`; a head site named for a model without a head is refused
    with what to probe instead."""
    try:
        return parse_sites(model, spec)
    except ValueError as e:
        asked = [h for h in HEAD_SITES if h in str(spec)]
        if asked and not any(h in model.sites for h in HEAD_SITES):
            raise InputError(f"--layers names {', '.join(asked)}, but {name} has no classifier head (a head-less "
                             "encoder): probe its blocks (--layers all, blocks or layer numbers), or load it with a "
                             "head (a fine-tuned classifier)") from e
        raise InputError(str(e)) from e


def probe_run(model: Model | str, data: str | tuple[Dataset, Dataset], out: str | Path,
              settings: ProbeSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
              log: Log = print, attribution_n: int = 128, **options: Any) -> dict:
    """[CLS] features of train + test, one probe per site (+ all layers concatenated) and one on
    the classifier input (head.hook_cls, for the attacks); rankings and their agreement with
    activation × gradient. The same run as `apex-jax probe`.

    The probes have the data's classes, which may be another task's than the model's (probing
    another task's features is legitimate; silence and attack then need probes of the model's
    own classes), but the training part needs at least two classes.

    A model without a classifier head (a pretrained encoder) is probed at every block; the
    classifier-input probe and the activation × gradient agreement need a head and are left
    out (summary.json's settings say so under "skipped"); naming a head site in `layers` for
    such a model is refused.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its train split's first `n_train` and test split's first
            `n`; unset: up to 2000 and 500, or the whole split when smaller), or a pair
            (train, test) of `apex_jax.data.Dataset` used as given.
        out: the run folder.
        settings: the run's `ProbeSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.
        attribution_n: test inputs of the activation × gradient rankings.

    Returns:
        summary.json's content plus "timing" and "result" (a `ProbeResult`, which `silence_run`
        and `attack_run` take as their probe).
    """
    s = ProbeSettings.of(settings, **options)
    out = runs.check_out(out)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        train, test = data  # (train, test) Datasets given as they are
    else:  # a name, a file, a Dataset or in-memory inputs (a list of strings is data, not a pair)
        train = _examples(data, "train", s.n_train, DEFAULT_N["probe_train"], s.split_seed)
        test = _examples(data, "test", s.n, DEFAULT_N["probe_test"], s.split_seed)
    loaded = _model(model, s)
    space = inputs.check(loaded, train, "probe", inputs.name_of(model, "the model"), log)
    has_head = HEAD_SITE in loaded.sites
    sites = _layer_sites(loaded, s.layers, inputs.name_of(model, "the model"))
    skipped = {} if has_head else {
        HEAD_SITE: "the model has no classifier head: no classifier-input probe (attacks need one) and no "
                   "activation x gradient agreement (no logit to attribute)"}
    config = ProbeConfig(l1=s.l1, l2=s.l2, steps=s.steps)
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, train),
                                 **inputs.identity(model, loaded, None, test, prefix="test_"), **s.record(),
                                 "n_train": len(train), "n": len(test), "sites": list(sites),
                                 "classes": list(train.label_names)}, overwrite, log,
                (model, data))
    with run:
        model = loaded
        if log:
            unset = [f for f, v in (("n_train", s.n_train), ("n", s.n)) if v is None]
            log(f"probing {len(sites)} site(s) on {len(train)} train / {len(test)} test inputs"
                + (f" ({', '.join(unset)} unset: up to {DEFAULT_N['probe_train']} / {DEFAULT_N['probe_test']} "
                   "of the splits)" if unset and not isinstance(data, (tuple, list)) else "")
                + ("" if has_head else "; the model has no classifier head, so no head.hook_cls probe"))
        t0 = time.perf_counter()
        all_sites = sites + ([HEAD_SITE] if has_head and HEAD_SITE not in sites else [])
        n_tr = len(train)
        batch = batching.encode(model, [train, test], s.max_length)  # one padded width for both parts
        labels = np.concatenate([train.labels, test.labels])
        feats = extract_cls(model, model.params, batch, all_sites, progress=progress)
        t_feat = time.perf_counter() - t0
        tr_idx, te_idx = np.arange(n_tr), np.arange(n_tr, len(labels))
        C = train.n_classes  # the probes' task is the data's (it may be another task than the model's)
        # provenance: which weights were probed and in which class order (checked by silence/attack)
        origin = {"model_params_sha256": params_digest(model.params), "classes": tuple(train.label_names)}
        layer_probes = dataclasses.replace(
            train_probes({x: feats[x] for x in sites}, labels, tr_idx, te_idx, config, C, progress), **origin)
        head_probe = None
        if has_head:
            head_probe = dataclasses.replace(train_probes({HEAD_SITE: feats[HEAD_SITE]}, labels, tr_idx, te_idx,
                                                          dataclasses.replace(config, concat=False), C, progress),
                                             **origin)
        layer_probes.save(run.path("probes"))
        if head_probe is not None:
            head_probe.save(run.path("head_probe"))
        t_train = time.perf_counter() - t0 - t_feat

        table = layer_probes.rows() + ([] if head_probe is None else head_probe.rows())
        run.write_csv("probes.csv", table)

        # rankings: global top neurons and their agreement with activation × gradient
        att_rows = np.arange(n_tr, min(len(labels), n_tr + attribution_n))
        att_batch = {k: v[att_rows] for k, v in batch.items()}
        rank_rows, agree_rows = [], []
        ranked = sites + ([HEAD_SITE] if has_head else [])
        bar = tracker(len(ranked), "rankings (act x grad)" if has_head else "rankings", "sites", progress)
        # every site's activation × gradient from one pass (one compiled kernel for all of them);
        # a head-less model has no logit to attribute
        attrs = rankings.attribution_rankings(model, model.params, att_batch, list(dict.fromkeys(ranked))) \
            if has_head else {}
        concat = _concat_agreement(layer_probes, attrs)
        for site in ranked:
            W = (head_probe if site == HEAD_SITE else layer_probes)[site].W
            g = rankings.global_ranking(W)
            attr = attrs.get(site)
            rnd = rankings.rank(np.random.default_rng(0).random(W.shape[1]))
            rank_rows.append({"site": site, "top_neurons": g.order[:20].tolist(),
                              **{f"top_neurons_class_{c}": rankings.class_ranking(W, c).order[:20].tolist() for c in range(C)},
                              "neurons_covering_50pct_mass": int(rankings.mass_cover(g, 50).sum()),
                              "neurons_covering_90pct_mass": int(rankings.mass_cover(g, 90).sum())})
            agree_rows.append({"site": site,
                               "spearman_probe_vs_attribution": None if attr is None else rankings.spearman(g, attr),
                               "spearman_probe_vs_random": rankings.spearman(g, rnd),
                               "top10pct_overlap_probe_attribution": None if attr is None else float(
                                   (rankings.top_k(g, 10) * rankings.top_k(attr, 10)).sum() / rankings.k_count(10, len(g.scores))),
                               # the all-layers probe's weights on this site's units vs its attribution
                               "spearman_concat_probe_vs_attribution": concat["by_site"].get(site)})
            bar.update()
        bar.close()
        run.write_csv("rankings.csv", rank_rows)
        run.write_csv("ranking_agreement.csv", agree_rows)
        plots.plot_probe_accuracy(run.path("probe_accuracy.png"), table)
        summary = run.write_summary({"probes": table, "ranking_agreement": agree_rows,
                                     "concat_agreement": {k: v for k, v in concat.items() if k != "by_site"},
                                     "label_names": list(model.label_names)},
                                    label_space=space, details={"n_test": len(test), "probe": dataclasses.asdict(config),
                                                                "head_probe": has_head, "skipped": skipped})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2), "feature_seconds": round(t_feat, 2),
                                   "train_seconds": round(t_train, 2)})
        run.complete(log)
        result = ProbeResult(layer_probes, head_probe, rank_rows, agree_rows, len(train), len(test))
        return {**summary, "timing": timing, "result": result}


def _concat_agreement(probes: ProbeSet, attrs: dict) -> dict:
    """The all-layers probe's global ranking vs activation × gradient over the same neurons
    (`rankings.layerwise_spearman`): ρ over the concatenation and within each site. Empty
    values without a concatenated probe or attributions (a head-less model)."""
    sites = list(probes.sites)
    if CONCAT not in probes.probes or not sites or any(s not in attrs for s in sites):
        return {"sites": sites, "concat": None, "layers": None, "by_site": {}}
    g = rankings.global_ranking(probes[CONCAT].W)
    a = np.concatenate([attrs[s].scores for s in sites])
    if a.shape != g.scores.shape:  # the probe's sites are not the attributed features (cannot happen from probe_run)
        return {"sites": sites, "concat": None, "layers": None, "by_site": {}}
    rho = rankings.layerwise_spearman(g, a, [attrs[s].scores.size for s in sites])
    return {"sites": sites, **rho, "by_site": dict(zip(sites, rho["layers"]))}


def _named(names: Sequence[str]) -> bool:
    """Whether class names carry meaning (not "0", "1", ... or LABEL_0, ...: index-only names)."""
    return not all(str(n).strip().lower() in (str(k), f"label_{k}") for k, n in enumerate(names))


def _check_origin(where: str, digest: str | None, classes: Sequence[str] | None, n_classes: int | None,
                  model: Model) -> None:
    """InputError unless probes of `digest` (the probed weights), `classes` (their class order)
    and `n_classes` are this model's: the probe's class c must be the model's class c."""
    ours = params_digest(model.params)
    if digest not in (None, ours):
        raise InputError(f"{where} probed other weights (model_params_sha256 {digest[:12]}…, this model's is "
                         f"{ours[:12]}…): its neuron rankings are another model's; probe this model first")
    names = list(model.label_names or [])
    if classes is not None and names and _named(classes) and _named(names) and \
            [str(c).strip().lower() for c in classes] != [str(c).strip().lower() for c in names]:
        raise InputError(f"{where} was trained on classes {list(classes)}, the model's are {names}: class c "
                         "of the probe must be the model's class c; probe the model on data labelled with its "
                         "own classes")
    C = model.config.n_classes
    if n_classes is not None and C is not None and n_classes != C:
        raise InputError(f"{where} has probes of {n_classes} classes, the model has {C}: class c of the probe "
                         "must be the model's class c; probe the model on data labelled with its own classes")


def check_probe_run(probe: str | Path, model: Model) -> None:
    """InputError unless `probe` is a complete probe run of `model`: the same weights (its
    model_params_sha256) and the model's classes in the model's order, so the probe's class c is
    the model's class c (a silence or attack run reads the probe's rankings per class)."""
    m = runs.read_manifest(probe)
    if m is None:
        return  # probes saved without a run folder (Python): nothing recorded to compare
    if m.get("command") != "probe":
        raise InputError(f"--probe {probe} is a {m.get('command')} run, not a probe run; give a folder written "
                         "by `apex-jax probe`")
    if m.get("status") != "complete":
        raise InputError(f"--probe {probe} is an incomplete probe run (interrupted?); rerun its command "
                         f"({' '.join(map(str, m.get('command_line', [])))}) to finish it")
    s = m.get("settings", {})
    _check_origin(f"--probe {probe}", s.get("model_params_sha256"), s.get("classes"), None, model)


def load_probes(run: str | Path) -> tuple[ProbeSet, ProbeSet | None]:
    """(layer ProbeSet, head ProbeSet) of a probe run folder, with a clear error if absent; the
    head ProbeSet is None for a run on a model without a classifier head."""
    run = Path(run)
    if not (run / "probes").exists():
        raise FileNotFoundError(f"{run} has no probes/; run `apex-jax probe MODEL --data DATA --out {run}` first.")
    head = ProbeSet.load(run / "head_probe") if (run / "head_probe").exists() else None
    return ProbeSet.load(run / "probes"), head


PROBE_FORMS = ("a probe run folder, the dict probe_run returns, its ProbeResult (summary['result']), a ProbeSet, "
               "or a (layer ProbeSet, head ProbeSet) pair")


def probe_source(probe: Any, model: Model) -> tuple[ProbeSet, ProbeSet | None, dict]:
    """The probes a silence or attack run reads, checked against `model`, and how its run
    record names them.

    Args:
        probe: a probe run folder (checked: a complete probe run of these weights, the model's
            class order), or in memory: the dict `probe_run` returns, its `ProbeResult`, a
            `ProbeSet` (its head.hook_cls probe, if it has one, is the head probe) or a pair
            (layer ProbeSet, head ProbeSet). In-memory probes are checked by the provenance
            they carry (`ProbeSet.model_params_sha256`, `ProbeSet.classes`) and their number
            of classes.
        model: the model the run perturbs.

    Returns:
        (layer probes, head probe or None, {"probe", "probe_run_sha256"} for the run record:
        a folder's path and manifest digest, or "<in memory>" and a digest of the probes' arrays).

    Raises:
        InputError: another form, probes of other weights or another class order, an
            incomplete probe run. FileNotFoundError / CheckpointError: a folder without
            readable probes.
    """
    if isinstance(probe, (str, Path)):
        layers, head = load_probes(probe)  # a missing or corrupt probe run is refused before `out` is touched
        check_probe_run(probe, model)
        for ps in (layers, head):
            if ps is not None:
                _check_origin(f"--probe {probe}", ps.model_params_sha256, ps.classes, ps.n_classes, model)
        return layers, head, {"probe": str(probe), "probe_run_sha256": probe_run_identity(probe)}
    if isinstance(probe, dict) and isinstance(probe.get("result"), ProbeResult):
        probe = probe["result"]
    if isinstance(probe, ProbeResult):
        layers, head = probe.probes, probe.head
    elif isinstance(probe, ProbeSet):
        layers, head = probe, (probe if HEAD_SITE in probe.probes else None)
    elif isinstance(probe, (tuple, list)) and len(probe) == 2 and isinstance(probe[0], ProbeSet) and \
            (probe[1] is None or isinstance(probe[1], ProbeSet)):
        layers, head = probe
    else:
        raise InputError(f"probe must be {PROBE_FORMS}; got {type(probe).__name__}")
    for ps in (layers, head):
        if ps is not None:
            _check_origin("the probes given", ps.model_params_sha256, ps.classes, ps.n_classes, model)
    arrays = [{s: tuple(p[:4]) for s, p in ps.probes.items()} for ps in (layers, head) if ps is not None]
    digest = hashlib.sha256(json.dumps([list(ps.probes) for ps in (layers, head) if ps is not None]).encode()
                            + arrays_digest(*arrays).encode()).hexdigest()
    return layers, head, {"probe": "<in memory>", "probe_run_sha256": digest}


# ----------------------------------------------------------------------------- silence
def _check_size(s: SilenceSettings, n: int, n_sites: int, n_classes: int) -> None:
    """Refuses a silencing of more than `MAX_FORWARDS` forwards without `yes` (an upper bound:
    top, bottom, random and control masks per k, the per-class masks, noise draws)."""
    ranked = 2 + ("attribution" in s.control_set)  # top, bottom (+ attribution)
    per_k = (ranked + s.random) * (2 if "mean" in s.control_set else 1) + (n_classes if s.per_class else 0)
    masks = len(s.k) * per_k
    forwards = n * n_sites * masks * (s.draws if s.mode == "noise" else 1)
    if forwards > MAX_FORWARDS and not s.yes:
        raise InputError(f"this silencing is about {forwards:,} forwards ({n} inputs x {n_sites} sites x {masks} masks"
                         + (f" x {s.draws} draws" if s.mode == "noise" else "") + f"), more than {MAX_FORWARDS:.0e}; "
                         "check --random, --draws and --k, or pass --yes (yes=True) to run it")


def _ablation_means(model: Model, batch: dict, probes: ProbeSet, sites: Sequence[str],
                    progress: Progress) -> tuple[dict[str, np.ndarray], str]:
    """The values mean-ablation sets each site's neurons to, and where they come from: the mean
    [CLS] over the probe's training inputs (stored with a standardized probe) or, for a probe of
    raw features (which stores mean 0, std 1), the mean over the evaluation inputs."""
    if probes.config.standardize:
        return {site: np.asarray(probes[site].mean, np.float32) for site in sites}, "probe training inputs"
    feats = extract_cls(model, model.params, batch, list(sites), progress=progress)
    return {site: feats[site].mean(0) for site in sites}, "evaluation inputs (the probe stores no training mean)"


def silence_run(model: Model | str, data: Dataset | str, probe: Any, out: str | Path,
                settings: SilenceSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
                log: Log = print, **options: Any) -> dict:
    """Silencing curves with random controls at each probed layer, class asymmetry. The same
    run as `apex-jax silence`.

    Every selection is scored by accuracy, weighted F1, the mean label margin and the mean
    KL(clean ‖ silenced); controls.csv compares each ranked selection with the random ones on
    all four (per site the random draws lie in the silenced layer: the control is
    layer-matched by construction). The controls (`settings.controls`) add attribution masks
    (top-k% by activation × gradient, computed here on the evaluation inputs: the label's logit
    at the classifier token) and mean-ablation (every neuron set to its mean over the probe's
    training inputs, which the probe stored for its standardization; a probe of raw features
    stores none, and then the evaluation inputs' mean is used; summary.json's settings say
    which, `mean_source`).
    Accuracy and F1 compare predictions with the labels, so the labels must be the model's
    classes; macro-F1 averages over the classes present in the data only.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its `settings.split`, first `settings.n`; unset: up to
            200, or the whole split when smaller), or a `Dataset`.
        probe: the probes of this model: a run folder written by `probe_run` / `apex-jax probe`,
            or in memory the dict `probe_run` returned, its `ProbeResult` or a `ProbeSet`
            (`probe_source`: each is checked to be of this model's weights and class order).
        out: the run folder.
        settings: the run's `SilenceSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.

    Returns:
        summary.json's content plus "timing" and "result" (the `SilencingResult`).
    """
    s = SilenceSettings.of(settings, **options)
    out = runs.check_out(out)
    mesh = sweep_mesh(s.model_parallel)
    ds = _examples(data, s.split, s.n, DEFAULT_N["silence"], s.split_seed)
    loaded = _model(model, s)
    ds = inputs.align(loaded, ds)  # string labels numbered as the model numbers its classes
    space = inputs.check(loaded, ds, "evaluate", inputs.name_of(model, "the model"), log)
    layer_probes, _, probe_record = probe_source(probe, loaded)  # checked before `out` is touched
    if model_parallel_of(mesh) > 1:
        loaded = loaded.replace(shard_params(loaded.params, mesh))
    config = SilenceConfig(k_levels=s.k, n_random=s.random, positions=s.positions, mode=s.mode, sigma=s.sigma,
                           draws=s.draws, seed=s.seed, joint=s.joint, per_class=s.per_class,
                           attribution="attribution" in s.control_set, mean_ablation="mean" in s.control_set,
                           asymmetry_k=s.asymmetry_level)
    config.check(loaded.config.n_classes)
    sites = parse_sites(loaded, s.layers) if s.layers else None
    _check_size(s, len(ds), len(sites or layer_probes.sites), loaded.config.n_classes)
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, ds), **s.record(), "n": len(ds),
                                 "layers": None if sites is None else list(sites), "asymmetry_k": config.asymmetry_k,
                                 **probe_record},
                overwrite, log, (model, data, probe_record["probe"]))
    with run:
        model, data, label_space = loaded, ds, dataclasses.asdict(space)
        sweep_kw = {"progress": progress, "run_dir": out, "mesh": mesh, "pad_multiple": s.pad_multiple}
        t0 = time.perf_counter()
        sites = list(sites or layer_probes.sites)
        missing = [s for s in sites if s not in layer_probes.probes]
        if missing:
            raise ValueError(f"the probe run has no probes for {missing}; it has {list(layer_probes.sites)}.")
        scores = {}
        for site in sites:
            W = layer_probes[site].W
            scores[site] = (rankings.global_ranking(W).scores,
                            np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])]))
        batch = batching.encode(model, data, s.max_length)
        means = attribution = mean_source = None
        if config.mode == "mean" or config.mean_ablation:
            means, mean_source = _ablation_means(model, batch, layer_probes, sites, sweep_kw.get("progress"))
        if config.attribution:
            attribution = {site: r.scores for site, r in rankings.attribution_rankings(
                model, model.params, batch, sites, target=np.asarray(data.labels, np.int32)).items()}
        res = silencing_experiment(model, model.params, batch, data.labels, data.ids, scores, config,
                                   means=means, attribution=attribution, **sweep_kw)
        if label_space is not None:  # macro-F1 over the classes present in the data
            present = np.asarray(label_space["present"], int)
            for m in [res.clean, *(lr.metrics for lr in res.layers)]:
                m.macro_f1 = m.class_f1[:, present].mean(1)
        run.write_csv("silencing.csv", res.rows("grid"))
        controls = res.rows("controls")
        run.write_csv("controls.csv", controls)
        curves = res.rows("curves")
        run.write_csv("curves.csv", curves)
        names = list(model.label_names)
        summary_layers = []
        cells = ("k_percent", "drop", "z", "p", "random_mean", "random_std")
        for lr in res.layers:
            mine = [c for c in controls if c["site"] == lr.site]
            top = [c for c in mine if c["selection"] == "top" and c["ablation"] == config.mode and c["score"] == "accuracy"]
            # every ranked selection (probe top and bottom, attribution; zeroed / mean-ablated) on every score
            ranked = {}
            for c in mine:
                if c["selection"] in ("top", "bottom", "attribution"):
                    ranked.setdefault(f"{c['selection']}/{c['ablation']}", {}).setdefault(c["score"], []).append(
                        {k: c[k] for k in cells})
            summary_layers.append({"site": lr.site, "top_k": [{k: c[k] for k in cells} for c in top],
                                   "ranked": ranked})
        asym = {}
        if config.per_class:
            for lr in res.layers:
                asym[lr.site] = res.asymmetry(lr.site)
            run.write_csv("asymmetry.csv", res.rows("asymmetry"))
            plots.plot_class_asymmetry(run.path("class_asymmetry.png"), asym, names, config.asymmetry_k)
        plots.plot_silencing_curves(run.path("silencing_curves.png"), res, "accuracy")
        summary = run.write_summary({"clean": {**res.clean.row(0), "margin": res.clean_value("margin")},
                                     "layers": summary_layers, "curves": curves,
                                     "asymmetry": {site: m.tolist() for site, m in asym.items()}, "label_names": names},
                                    label_space=label_space, details={"sites": sites, "config": dataclasses.asdict(config),
                                                                      "mean_source": mean_source,
                                                                      "controls_format": CONTROLS_FORMAT})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2), "sweep_seconds": round(res.seconds, 2),
                                   "perturbed_forwards": res.perturbed_forwards,
                                   "forwards_per_second": round(res.perturbed_forwards / max(res.seconds, 1e-9), 1)})
        run.complete(log)
        return {**summary, "timing": timing, "result": res}


# ----------------------------------------------------------------------------- attack
def attack_run(model: Model | str, data: Dataset | str, probe: Any, out: str | Path,
               settings: AttackSettings | None = None, *, overwrite: bool = False, progress: Progress = True,
               log: Log = print, **options: Any) -> dict:
    """Logit bias, column push and bit flips toward a target class on the classifier input.
    The same run as `apex-jax attack`. The target is one of the model's classes and accuracy
    compares predictions with the labels, so the labels must be the model's classes.

    Args:
        model: a model name or HF folder, or an `apex_jax.Model`.
        data: a data set name or file (its `settings.split`, first `settings.n`; unset: up to
            200, or the whole split when smaller), or a `Dataset`.
        probe: the probes of this model, as for `silence_run` (its classifier-input probe,
            head.hook_cls, ranks the target's neurons).
        out: the run folder.
        settings: the run's `AttackSettings`; `options` are its fields as keywords.
        overwrite, progress, log: as for `apex_jax.apex_run`.

    Returns:
        summary.json's content plus "timing" and "result" (the attack results).
    """
    s = AttackSettings.of(settings, **options)
    out = runs.check_out(out)
    ds = _examples(data, s.split, s.n, DEFAULT_N["attack"], s.split_seed)
    loaded = _model(model, s)
    ds = inputs.align(loaded, ds)  # string labels numbered as the model numbers its classes
    space = inputs.check(loaded, ds, "evaluate", inputs.name_of(model, "the model"), log)
    C = loaded.config.n_classes
    if not 0 <= s.target < C:
        names = ", ".join(f"{c} ({loaded.label_names[c]})" for c in range(min(C, 12)))
        raise InputError(f"--target {s.target} is not one of the model's {C} classes; choose one of {names}")
    _, head_probe, probe_record = probe_source(probe, loaded)
    if head_probe is None or HEAD_SITE not in head_probe.probes:
        raise InputError(f"the probes given have no classifier-input ({HEAD_SITE}) probe, which ranks the target's "
                         "neurons: give the probe run of this model (apex-jax probe) or its ProbeResult")
    config = AttackConfig(target=s.target, k_percent=s.k)
    run = _open(s.command, out, {**inputs.identity(model, loaded, data, ds), **s.record(), "n": len(ds),
                                 **probe_record}, overwrite, log, (model, data, probe_record["probe"]))
    with run:
        model = loaded
        t0 = time.perf_counter()
        W = head_probe[HEAD_SITE].W
        class_scores = np.stack([rankings.class_ranking(W, c).scores for c in range(W.shape[0])])
        batch = batching.encode(model, ds, s.max_length)
        h = extract_cls(model, model.params, batch, [HEAD_SITE], progress=progress)[HEAD_SITE]
        res = attack_experiment(model, model.params, h, ds.labels, class_scores, config)
        run.write_csv("attacks.csv", res["rows"])
        plots.plot_attacks(run.path("attack_curves.png"), res["rows"])
        summary = run.write_summary({**res, "label_names": list(model.label_names)}, label_space=space,
                                    details={"config": dataclasses.asdict(config)})
        timing = run.write_timing({"seconds": round(time.perf_counter() - t0, 2)})
        run.complete(log)
        return {**summary, "timing": timing, "result": res}
