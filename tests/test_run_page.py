"""The run page (RUN/index.html, `apex-jax report`) on a finished run of every command.

Each page must parse, link only files that exist beside it, show the run's summary numbers and
the exact command, be listed in run.json (so --overwrite removes it), and be rebuilt by
`apex-jax report`; a folder that is not a run exits 2 and writes nothing.
"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from apex_jax import cli, run_page
from apex_jax.models.loading import resolve
from tests.helpers.tiny_text import sentiment_csv, tiny_bert_folder

COMMANDS = ("ft", "apex", "probe", "silence", "attack")


class _Page(HTMLParser):
    """Collects the links (href, src), the text and the tables of a page; fails on unbalanced tags."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.links, self.images, self.text, self.stack, self.tables = [], [], [], [], 0

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src")]
        self.images += [v for k, v in attrs if tag == "img" and k == "src"]
        self.tables += tag == "table"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: Path) -> _Page:
    p = _Page()
    p.feed(page.read_text(encoding="utf-8"))
    p.close()
    assert p.stack == [], p.stack
    p.text = " ".join(" ".join(p.text).split())
    return p


def assert_links_exist(page: Path, parsed: _Page) -> None:
    assert parsed.links
    for link in parsed.links:
        assert "://" not in link and not link.startswith("/"), link  # relative only: the folder travels
        assert (page.parent / unquote(link)).exists(), link


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    model = tiny_bert_folder(root / "bert", resolve("minilm"), seed=3)
    task = sentiment_csv(root / "task.csv", 40)
    argv = {
        "ft": ["finetune", model, "--data", task, "--out", root / "ft", "--epochs", "1", "--batch-size", "8",
               "--max-length", "16", "--n-train", "16"],
        "apex": ["apex", model, "--data", task, "--out", root / "apex", "--n", "6", "--draws", "4",
                 "--sigmas", "0.1,1,8", "--max-length", "16", "--quiet"],
        "probe": ["probe", model, "--data", task, "--out", root / "probe", "--n-train", "24", "--n", "8",
                  "--steps", "10", "--max-length", "16"],
        "silence": ["silence", model, "--data", task, "--probe", root / "probe", "--out", root / "silence", "--n", "4",
                    "--k", "10,50", "--random", "2", "--asymmetry-k", "50", "--layers", "1", "--max-length", "16",
                    "--quiet"],
        "attack": ["attack", model, "--data", task, "--probe", root / "probe", "--out", root / "attack", "--n", "4",
                   "--target", "1", "--max-length", "16"],
    }
    for name in COMMANDS:
        assert cli.main([str(a) for a in argv[name]]) == 0, name
    return {"root": root, "argv": {k: [str(a) for a in v] for k, v in argv.items()}}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_run_has_a_page(runs, name):
    run = runs["root"] / name
    page = run / "index.html"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "complete" and "index.html" in manifest["files"]
    assert manifest["command_line"] == ["apex-jax", *runs["argv"][name]]
    parsed = parse(page)
    assert_links_exist(page, parsed)
    text = parsed.text
    assert "complete" in text and "not complete" not in text  # the final manifest, not the run layer's
    assert " ".join(runs["argv"][name][:2]) in text  # the exact command
    assert manifest["settings"]["model_params_sha256"] in text and manifest["versions"]["jax"] in text
    # every output file is linked, every figure shown inline, every table rendered
    for f in manifest["files"]:
        if f != "index.html":
            assert f in parsed.links or f + "/" in parsed.links, f
    pngs = sorted(p.name for p in run.glob("*.png"))
    assert parsed.images == run_page._ordered(pngs, list(run_page.FIGURES))  # inline, known figures first
    assert parsed.tables >= len(list(run.glob("*.csv"))) + 1  # + files (+ settings, versions)


def test_summary_numbers_on_the_pages(runs):
    root = runs["root"]
    text = {n: parse(root / n / "index.html").text for n in COMMANDS}
    m = json.loads((root / "ft" / "summary.json").read_text())["results"]
    assert f"held-out test accuracy {m['test_accuracy']:.4g}" in text["ft"]
    r = json.loads((root / "apex" / "summary.json").read_text())["results"]
    assert f"clean accuracy {r['clean_accuracy']:.4g}" in text["apex"]
    assert f"inputs {r['n_inputs']}" in text["apex"]
    esc = r["escape_sigma"]
    assert (f"{esc['n_escaped']} of 6 inputs escape" in text["apex"]) if esc["median"] is not None \
        else "none escape" in text["apex"]
    t = json.loads((root / "apex" / "timing.json").read_text())
    assert f"perturbed forwards {t['perturbed_forwards']}" in text["apex"] and t["perturbed_forwards"] == 6 * 3 * 4
    probes = json.loads((root / "probe" / "summary.json").read_text())["results"]["probes"]
    head = next(p for p in probes if p["site"] == "head.hook_cls")
    assert f"head.hook_cls probe {head['test_accuracy']:.4g}" in text["probe"]
    clean = json.loads((root / "silence" / "summary.json").read_text())["results"]["clean"]
    assert f"clean accuracy {clean['accuracy']:.4g}" in text["silence"]
    a = json.loads((root / "attack" / "summary.json").read_text())["results"]
    assert f"target class 1 ({a['label_names'][1]})" in text["attack"]
    # a σ printed for people: 0.1, never 0.10000000149011612
    assert "0.10000000149011612" not in text["apex"] and "0.1, 1, 8" in text["apex"]


def test_long_table_is_cut_with_a_link(runs, tmp_path):
    silencing = runs["root"] / "silence" / "silencing.csv"
    n = len(silencing.read_text().splitlines()) - 1
    html = run_page._csv_table(silencing.parent, "silencing.csv", max_rows=3, long=5)
    assert n > 5 and html.count("<tr>") == 1 + 3 and f"showing the first 3 of {n} rows" in html
    assert 'href="silencing.csv"' in html
    html = run_page._csv_table(silencing.parent, "silencing.csv", max_rows=3, long=n)  # not long: all of it
    assert html.count("<tr>") == 1 + n and f"{n} rows — full table" in html


def test_report_rebuilds_a_page(runs, capsys):
    run = runs["root"] / "apex"
    before = (run / "index.html").read_text()
    (run / "index.html").unlink()
    m = json.loads((run / "run.json").read_text())
    m["files"].remove("index.html")  # a run written before pages existed
    (run / "run.json").write_text(json.dumps(m))
    assert cli.main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "index.html")
    assert (run / "index.html").read_text() == before
    assert "index.html" in json.loads((run / "run.json").read_text())["files"]


def test_report_on_a_folder_of_runs(runs, capsys):
    root = runs["root"]
    assert cli.main(["report", str(root)]) == 0
    page = root / "index.html"
    assert capsys.readouterr().out.strip() == str(page)
    parsed = parse(page)
    assert_links_exist(page, parsed)
    for name in COMMANDS:
        assert f"{name}/index.html" in parsed.links


@pytest.mark.parametrize("what", ["empty", "missing", "file", "not_a_run"])
def test_report_refuses_what_is_not_a_run(runs, tmp_path, capsys, what):
    target = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "file": tmp_path / "f.txt",
              "not_a_run": tmp_path / "other"}[what]
    if what == "empty":
        target.mkdir()
    elif what == "file":
        target.write_text("x")
    elif what == "not_a_run":
        (target / "sub").mkdir(parents=True)
        (target / "sub" / "notes.csv").write_text("a,b\n1,2\n")
    good = runs["root"] / "attack"
    stamp = (good / "index.html").stat().st_mtime_ns
    assert cli.main(["report", str(good), str(target)]) == 2  # every folder is checked before any page is written
    err = capsys.readouterr().err
    assert err.startswith("apex-jax report: error: ") and str(target) in err and "run" in err
    assert "Traceback" not in err
    assert (good / "index.html").stat().st_mtime_ns == stamp
    assert not (tmp_path / "empty" / "index.html").exists() and not (tmp_path / "other" / "index.html").exists()


def test_overwrite_removes_the_page(runs, capsys):
    """--overwrite removes the listed files, the page among them; the new run writes its own."""
    run = runs["root"] / "attack"
    argv = runs["argv"]["attack"]
    i = argv.index("--target")
    other = [*argv[:i + 1], "0", *argv[i + 2:], "--overwrite"]
    assert cli.main(other) == 0
    assert "index.html" in capsys.readouterr().out
    assert "target class 0" in parse(run / "index.html").text


def test_demo_ends_with_its_page(tmp_path, monkeypatch, capsys):
    """`apex-jax demo` (on the tiny model and task instead of MiniLM and VADER) writes a page per
    run and one linking them, and prints that page's path last."""
    import apex_jax.assets
    import apex_jax.demo

    model = tiny_bert_folder(tmp_path / "bert", resolve("minilm"), seed=5)
    monkeypatch.setattr(apex_jax.assets, "fetch_assets", lambda names=None: None)
    monkeypatch.setattr(apex_jax.demo, "MODEL", str(model))
    monkeypatch.setattr(apex_jax.demo, "DATA", str(sentiment_csv(tmp_path / "task.csv", 40)))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--epochs", "1", "--n-train", "16", "--n", "4", "--draws", "2",
                     "--probe-train", "24", "--probe-test", "8", "--max-length", "16"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"open the demo's page: {(out / 'index.html').resolve()}"
    parsed = parse(out / "index.html")
    assert_links_exist(out / "index.html", parsed)
    assert list(dict.fromkeys(link for link in parsed.links if link.endswith("/index.html"))) == [
        f"{n}/index.html" for n in ("finetune", "apex", "probe", "silence", "attack")]
    for n in ("finetune", "apex", "probe", "silence", "attack"):
        assert json.loads((out / n / "run.json").read_text())["command_line"][:2] == ["apex-jax", "demo"]
        assert_links_exist(out / n / "index.html", parse(out / n / "index.html"))


def test_incomplete_run_is_flagged(runs):
    run = runs["root"] / "probe"
    manifest = json.loads((run / "run.json").read_text())
    html = run_page.build_page(run, {**manifest, "status": "incomplete"})
    p = _Page()
    p.feed(html)
    text = " ".join(" ".join(p.text).split())
    assert "incomplete" in text and "This run is not complete" in text and "Rerun the same command" in text


def test_numbers_for_people():
    assert run_page.fmt(0.10000000149011612) == "0.1" and run_page.fmt(0.019999999552965164) == "0.02"
    assert run_page.fmt(None) == "—" and run_page.fmt(float("inf")) == "∞" and run_page.fmt(4.0) == "4"
    assert run_page.fmt(21504) == "21,504" and run_page.fmt(512) == "512" and run_page.fmt(0.53125) == "0.5312"
    assert run_page.fmt([0.05000000074505806, 1.0]) == "0.05, 1"


# ----------------------------------------------------------------------------- pages that show the finding
def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _silencing_result(per_layer: dict[str, dict[str, list[float]]], clean: float, k=(10.0, 50.0)):
    """A stand-in for SilencingResult with what plot_silencing_curves reads: per layer the top,
    bottom and two random selections' accuracy at each k."""
    from types import SimpleNamespace as NS

    layers = []
    for site, v in per_layer.items():
        sels, acc = [], []
        for kind, shift in (("top", 0), ("bottom", 0), ("random", 0), ("random", -0.01)):
            for i, kk in enumerate(k):
                sels.append(NS(kind=kind, k=kk, ablation="zero", cls=-1))
                acc.append(v[kind][i] + shift)
        layers.append(NS(site=site, selections=sels, metrics=NS(accuracy=np.asarray(acc))))
    return NS(layers=layers, config=NS(k_levels=k, mode="zero"), clean=NS(accuracy=np.asarray([clean])))


@pytest.mark.parametrize("panels, plot", [
    (7, "attacks"),    # the demo's attack figure was 2772 px wide: 7 panels in one row
    (3, "attacks"),
    (6, "silencing"),  # 3 × 4 in at 110 dpi was 1320 px
])
def test_figures_fit_a_1200px_page(tmp_path, panels, plot):
    from apex_jax.synapse import plots

    path = tmp_path / "f.png"
    if plot == "attacks":
        rows = [{"attack": f"kind{i}", "magnitude": m, "flip_to_target": m / 4, "accuracy": 1 - m / 4}
                for i in range(panels) for m in (0, 1, 2)]
        plots.plot_attacks(path, rows)
    else:
        layers = {f"blocks.{i}.hook_resid_post": {"top": [0.9, 0.8], "bottom": [0.94, 0.93], "random": [0.93, 0.9]}
                  for i in range(panels)}
        plots.plot_silencing_curves(path, _silencing_result(layers, 0.94))
    width, height = _png_size(path)
    assert width <= 1200, width
    assert height > 352 or panels <= 3  # more panels than fit one row wrap into rows


def test_silencing_y_axis_is_scaled_to_the_data(tmp_path):
    """Panels whose accuracy moves within 0.78–0.94 get that range (clean line included), not 0–1."""
    from apex_jax.synapse import plots

    layers = {"blocks.0.hook_resid_post": {"top": [0.85, 0.78], "bottom": [0.94, 0.92], "random": [0.93, 0.9]},
              "blocks.1.hook_resid_post": {"top": [0.9, 0.8], "bottom": [0.93, 0.93], "random": [0.92, 0.91]}}
    path = plots.plot_silencing_curves(tmp_path / "s.png", _silencing_result(layers, 0.94))
    assert run_page.png_description(path) == ("The y axis spans 0.78–0.94 (not 0–1); dotted: the clean "
                                              "accuracy 0.94.")


@pytest.mark.parametrize("cells, want, note", [
    ({"L0": [[0.0, 0.0], [0.0, 0.0]], "L5": [[0.0, 0.0], [0.0, 0.0]]}, "L5",  # no effect anywhere: the last
     "no layer of 2 has a positive drop; the last one"),
    ({"L0": [[0.0, 0.3], [0.1, 0.0]], "L5": [[0.0, 0.0], [0.0, 0.0]]}, "L0",  # the demo: effects in one layer
     "its largest F1 drop, 0.3, is the largest of the 2 layers"),
    ({"L0": [[0.05, 0.0], [0.0, 0.0]], "L3": [[0.0, 0.0], [0.2, 0.0]], "L5": [[0.1, 0.0], [0.0, 0.0]]}, "L3",
     "its largest F1 drop, 0.2, is the largest of the 3 layers"),
    ({"L0": [[float("nan"), 0.1], [0.0, 0.0]], "L5": [[0.0, -0.4], [0.0, 0.0]]}, "L0",  # nan ignored; a gain is no drop
     "its largest F1 drop, 0.1, is the largest of the 2 layers"),
])
def test_asymmetry_shows_the_layer_with_the_largest_drop(tmp_path, cells, want, note):
    from apex_jax.synapse import plots

    asym = {k: np.asarray(v) for k, v in cells.items()}
    assert plots.largest_effect_site(asym) == want
    path = plots.plot_class_asymmetry(tmp_path / "a.png", asym, ["neg", "pos"], 10)
    assert run_page.png_description(path) == f"Layer {want} ({want}): {note} (all of them: asymmetry.csv)."


@pytest.mark.parametrize("flip, want_index", [
    ([0.0, 0.002, 0.05, 0.2, 0.6], 3),  # the demo: 0.002 at the smallest moving σ; 0.2 is the first ≥ 0.1
    ([0.0, 0.1, 0.5], 1),               # exactly the share
    ([0.0, 0.01, 0.04, 0.03], 2),       # none reaches 0.1: the largest flip rate
    ([0.0, 0.0, 0.0], 0),               # nothing moves: the first σ
])
def test_transitions_sigma_is_informative(flip, want_index):
    from types import SimpleNamespace as NS

    from apex_jax.apex import plots

    consistency = 1.0 - np.tile(np.asarray(flip), (3, 1))
    index, rate = plots.transition_sigma(NS(consistency=consistency))
    assert index == want_index and rate == pytest.approx(flip[want_index])


@pytest.mark.parametrize("flip, caption", [
    ([0.0, 0.002, 0.2], "Shown at σ = 1, flip rate 0.2."),
    ([0.0, 0.002, 0.04], "Shown at σ = 1, flip rate 0.04: no σ of the grid reaches 10%, this one flips the most."),
])
def test_transitions_figure_says_its_sigma(tmp_path, flip, caption):
    from types import SimpleNamespace as NS

    from apex_jax.apex import plots

    n, C = 3, 2
    counts = np.zeros((n, 3, C), np.int64)  # [inputs, σ, class] draws of 100, clean class 0
    for s, f in enumerate(flip):
        counts[:, s, 1] = round(100 * f)
        counts[:, s, 0] = 100 - counts[:, s, 1]
    consistency = counts[:, :, 0] / 100
    result = NS(sigmas=np.array([0.01, 0.1, 1.0]), consistency=consistency, threshold=0.5,
                clean=np.zeros(n, int), escape_sigma=lambda: np.full(n, np.inf),
                transitions=lambda i: np.stack([counts[:, i].sum(0), np.zeros(C, np.int64)]),  # all clean class 0
                class_shares=lambda i: counts[:, i].sum(0) / (n * 100))
    plots.plot_all(tmp_path, result, ["neg", "pos"], relative=True)
    assert run_page.png_description(tmp_path / "transitions.png") == caption


def test_transitions_caption_names_sigma_and_flip_rate(runs):
    """The apex run's page caption says at which σ the transitions are shown and their flip rate."""
    sigmas = [0.1, 1, 8]
    rows = list(csv.DictReader(open(runs["root"] / "apex" / "sigmas.csv")))
    flip = [float(r["flip_rate"]) for r in rows]
    at = next((i for i, f in enumerate(flip) if f >= 0.1), int(np.argmax(flip)))
    text = parse(runs["root"] / "apex" / "index.html").text
    assert f"Shown at σ = {sigmas[at]:.3g}, flip rate {flip[at]:.3g}" in text


def _controls(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "controls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("z, shown", [
    (float("inf"), "n/a (random spread 0)"), (float("-inf"), "n/a (random spread 0)"), (2.5, "2.5"), (None, "—"),
])
def test_z_is_never_infinite(tmp_path, z, shown):
    assert run_page.fmt_z(z) == shown
    folder = tmp_path / "silence"
    _controls(folder, [{"site": "blocks.5.hook_resid_post", "selection": "top", "score": "accuracy",
                        "drop": 0.004, "z": z if z is not None else "", "p": 0.048}])
    (folder / "summary.json").write_text(json.dumps({"kind": "silence", "results": {
        "clean": {"accuracy": 0.9}, "layers": [{"site": "blocks.5.hook_resid_post", "top_k": [
            {"k_percent": 10, "drop": 0.004, "z": z, "p": 0.048}]}]}}))
    text = parse_html(run_page.build_page(folder))
    assert f"z = {shown}, p = 0.048" in text  # the headline card
    assert "∞" not in text
    if z is not None:
        assert f"0.004 {shown} 0.048" in text  # the controls table's row


def parse_html(page: str) -> str:
    p = _Page()
    p.feed(page)
    return " ".join(" ".join(p.text).split())


def test_controls_preview_shows_the_largest_drops(tmp_path):
    """A long controls.csv is previewed by its largest drops per score, not its first rows."""
    rows = [{"site": "L0", "selection": "random" if i < 60 else "top", "score": score, "k_percent": i,
             "drop": 0.0 if i < 60 else round(0.01 * (i - 59), 2), "z": 0.0, "p": 1.0}
            for score in ("accuracy", "margin") for i in range(70)]
    _controls(tmp_path, rows)
    html = run_page._csv_table(tmp_path, "controls.csv", max_rows=10, long=40)
    text = parse_html(html)
    assert "showing the 5 with the largest drop per score of 140 rows" in text
    shown = [float(t) for t in re.findall(r'<tr><td>L0</td><td>top</td><td>\w+</td><td class="num">\d+</td>'
                                          r'<td class="num">([\d.]+)</td>', html)]
    assert shown == [0.1, 0.09, 0.08, 0.07, 0.06] * 2


def test_empty_columns_are_left_out_and_named(tmp_path):
    """k_at_half_score is empty where the score never halves on the k grid (every row of the demo):
    the column is not shown and the note names it; curves.csv's description says why."""
    with open(tmp_path / "curves.csv", "w", newline="") as f:
        f.write("site,selection,score,area_under_drop,k_at_half_score\n")
        f.write("L0,top,accuracy,0.02,\nL0,random,accuracy,0.001,\n")
    text = parse_html(run_page._csv_table(tmp_path, "curves.csv"))
    assert "k_at_half_score: empty in every row, not shown" in text
    assert "site selection score area_under_drop L0" in text
    assert "empty where it never does" in run_page.TABLES["curves.csv"]


def test_report_keeps_the_index_title(runs, capsys):
    """`apex-jax report` on a folder of runs keeps the title its index page was written with."""
    root = runs["root"]
    run_page.write_index(root, COMMANDS, "apex-jax demo: MiniLM on VADER <movie> reviews")
    assert cli.main(["report", str(root)]) == 0
    capsys.readouterr()
    assert run_page.index_title(root) == "apex-jax demo: MiniLM on VADER <movie> reviews"
    assert "<h1>apex-jax demo: MiniLM on VADER &lt;movie&gt; reviews</h1>" in (root / "index.html").read_text()
    (root / "index.html").unlink()  # no page yet: the default title
    assert cli.main(["report", str(root)]) == 0
    assert run_page.index_title(root) == f"apex-jax runs in {root.name}"


def test_page_css_keeps_figures_inside_the_page():
    """Grid items shrink below their image's width, and index thumbnails never exceed their row."""
    assert "min-width: 0" in run_page.CSS.split("figure {")[1].split("}")[0]
    assert "max-width: 100%" in run_page.CSS.split(".run .thumbs img {")[1].split("}")[0]


@pytest.mark.parametrize("summary, timing, want, absent", [
    ({"kind": "finetune", "results": {"test_accuracy": 0.8, "n_test": 10}}, {},  # a model reused: no seconds
     "held-out test accuracy 0.8", "time"),
    ({"kind": "silence", "results": {"clean": {"accuracy": 0.9}}}, {"perturbed_forwards": 0, "seconds": 3.5},
     "perturbed forwards 0 this run read its sweep from checkpoints (3.5 s)", "0/s"),
    ({"kind": "silence", "results": {"clean": {"accuracy": 0.9}, "layers": [
        {"site": "blocks.1.hook_resid_post", "top_k": [], "ranked": {"top/zero": {"margin": [
            {"k_percent": 10.0, "drop": 0.25, "z": 4.0, "p": 0.05}, {"k_percent": 50.0, "drop": 1.5, "z": None,
                                                                     "p": 0.05}]}}}]}}, {},
     "largest top-k margin drop 1.5 blocks.1.hook_resid_post, k = 50%", "largest top-k drop"),
    ({"kind": "apex", "results": {"n_inputs": 4, "clean_accuracy": 0.5}}, {"perturbed_forwards": 96, "seconds": 2.0,
                                                                           "forwards_per_second": 48.0},
     "perturbed forwards 96 2 s, 48/s", "checkpoints"),
])
def test_headline_cards(tmp_path, summary, timing, want, absent):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "timing.json").write_text(json.dumps(timing))
    cards = " ".join(" ".join(c) for c in run_page.headline(tmp_path))
    assert want in " ".join(cards.split()) and absent not in cards
