"""One static page per run folder: RUN/index.html ties a run's files together.

The page is built only from what the folder holds — run.json (command, command line, settings,
versions, status), summary.json (the results), timing.json, the CSV tables and the
PNG figures — so `apex-jax report RUN` rebuilds it at any time, and every link on it is relative
(copy or zip the folder and the page still works). No server, no JavaScript, no external assets.

    RUN/index.html   summary numbers, the figures (<img> of the PNGs beside it), the tables
                     (CSV rendered, long ones cut with a link to the file), the exact command,
                     settings and versions, and links to every raw file

A folder of runs (what `apex-jax demo` writes: finetune/, apex/, probe/, silence/, attack/) gets a
page that links each run's page with its headline numbers (`write_index`).

    run_page.write_page("runs/apex")           # -> runs/apex/index.html
    run_page.report("runs/demo")               # a run: its page; a folder of runs: the index page
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shlex
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

from apex_jax import fileio
from apex_jax.run_files import FIGURES, MANIFEST, PAGE, RUN_ORDER, SUMMARY, TABLES, TIMING
from apex_jax.errors import InputError

LONG_TABLE = 40  # a CSV with more rows is cut on the page: its first MAX_ROWS, then a link to the file
MAX_ROWS = 25
MAX_CELL = 48  # characters of a cell shown (long lists of neuron indices); the full text is its tooltip
Z_UNDEFINED = "n/a (random spread 0)"
# How a long table is previewed: by a column, largest first (or smallest: "asc"), per group of
# another column (each group its share of the rows). Other tables show their first rows.
PREVIEW = {
    "controls.csv": ("drop", "desc", "score"),
    "curves.csv": ("area_under_drop", "desc", "score"),
    "samples.csv": ("escape_sigma", "asc", None),
}

__all__ = ["build_index", "build_page", "check_reportable", "fmt_z", "headline", "index_title", "is_run",
           "png_description", "report", "write_index", "write_page"]

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh; }
h1 { font-size: 24px; margin: 0 0 4px; } h1 .cmd { color: #0969da; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 20px 0 4px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.sub { color: #59636e; margin: 0 0 16px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; vertical-align: middle;
         background: #dafbe1; color: #1a7f37; border: 1px solid #aceebb; }
.badge.incomplete { background: #fff8c5; color: #9a6700; border-color: #eac54f; }
.warn { background: #fff8c5; border: 1px solid #eac54f; padding: 8px 12px; border-radius: 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 10px; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; background: #fbfcfd; }
.card .label { font-size: 12px; color: #59636e; letter-spacing: .02em; }
.card .value { font-size: 20px; font-weight: 600; margin-top: 2px; }
.card .note { font-size: 12px; color: #59636e; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px; background: #fff; min-width: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 13px; color: #59636e; margin-top: 6px; }
.desc { color: #59636e; font-size: 13px; margin: 0 0 6px; }
.scroll { overflow-x: auto; border: 1px solid #d0d7de; border-radius: 6px; display: inline-block; max-width: 100%;
          vertical-align: top; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eaeef2; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.more { font-size: 13px; color: #59636e; margin: 4px 0 0; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 12px;
      white-space: pre-wrap; word-break: break-all; font-size: 13px; }
.scroll.kv { display: block; } table.kv { width: 100%; }
table.kv td:first-child { white-space: nowrap; width: 1%; color: #59636e; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
table.kv td { white-space: normal; word-break: break-word; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.run { border: 1px solid #d0d7de; border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
.run h2 { border: 0; margin: 0 0 8px; padding: 0; }
.run .thumbs { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 10px; }
.run .thumbs img { height: 180px; max-width: 100%; object-fit: contain; border: 1px solid #d0d7de; border-radius: 4px; }
"""


# ----------------------------------------------------------------------------- formatting
def fmt(v: Any, digits: int = 4) -> str:
    """A value for people: floats to `digits` significant digits (0.1, not 0.10000000149011612),
    None as an em dash, lists comma-separated."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, digits) for x in v)
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def fmt_z(z: Any) -> str:
    """A z-score against the random control; an infinite one (the random drops all equal) is
    not a z-score and reads "n/a (random spread 0)", never ∞."""
    try:
        if math.isinf(float(z)):
            return Z_UNDEFINED
    except (TypeError, ValueError):
        pass
    return fmt(z)


def _cell(text: str) -> tuple[str, bool]:
    """A CSV cell as shown: (text, numeric). Numbers get 4 significant digits."""
    try:
        f = float(text)
    except ValueError:
        return text, False
    if text.strip().lstrip("-").isdigit():
        return text, True
    return fmt(f), True


def _short(text: str, limit: int = MAX_CELL) -> str:
    """`text` escaped, cut at `limit` characters with the full text as its tooltip."""
    if len(text) <= limit:
        return html.escape(text)
    return f'<span title="{html.escape(text)}">{html.escape(text[:limit - 1])}…</span>'


def _href(path: str) -> str:
    """A relative link to a file beside the page (each part percent-quoted)."""
    from urllib.parse import quote

    return html.escape(quote(path))


def _card(label: str, value: Any, note: str = "") -> str:
    note_html = f'<div class="note">{html.escape(note)}</div>' if note else ""
    return (f'<div class="card"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(fmt(value) if not isinstance(value, str) else value)}</div>{note_html}</div>')


# ----------------------------------------------------------------------------- reading a folder
def _json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def is_run(folder: str | Path) -> bool:
    """Whether `folder` is a run folder: it has run.json, or the summary a run layer writes."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / f).is_file() for f in (MANIFEST, SUMMARY))


def _read(folder: Path, manifest: dict | None) -> dict:
    manifest = manifest if manifest is not None else (_json(folder / MANIFEST) or {})
    summary = _json(folder / SUMMARY) or {}
    if not isinstance(summary.get("results", {}), dict):  # not written by apex-jax: show no numbers
        summary = {}
    command = manifest.get("command") or summary.get("kind") or "unknown"
    metrics = (summary.get("results") or {}) if command == "finetune" else {}  # a training run's results
    return {"manifest": manifest, "summary": summary, "metrics": metrics,
            "timing": _json(folder / TIMING) or {}, "command": command}


def _label(names: Sequence[str], c: Any) -> str:
    try:
        return f"{c} ({names[int(c)]})" if names else str(c)
    except (IndexError, TypeError, ValueError):
        return str(c)


def _forwards_card(t: dict) -> tuple[str, str, str]:
    """The perturbed-forwards card; a rerun that read every draw from its sweep checkpoints ran none."""
    if t.get("perturbed_forwards") == 0:
        return ("perturbed forwards", "0", f"this run read its sweep from checkpoints ({fmt(t.get('seconds'))} s)")
    return ("perturbed forwards", fmt(t.get("perturbed_forwards")),
            f"{fmt(t.get('seconds'))} s, {fmt(t.get('forwards_per_second'))}/s")


def headline(folder: str | Path, manifest: dict | None = None) -> list[tuple[str, str, str]]:
    """The run's summary numbers as (label, value, note) triples, per command."""
    d = _read(Path(folder), manifest)
    r, t, m = d["summary"].get("results", {}), d["timing"], d["metrics"]
    names = r.get("label_names") or []
    out: list[tuple[str, str, str]] = []
    cmd = d["command"]
    if cmd == "finetune" and m:
        out.append(("held-out test accuracy", fmt(m.get("test_accuracy")), f"on {fmt(m.get('n_test'))} examples"))
        out.append(("test loss", fmt(m.get("test_loss")), ""))
        out.append(("examples", f"{fmt(m.get('n_train'))} / {fmt(m.get('n_val'))} / {fmt(m.get('n_test'))}",
                    "train / val / test"))
        h = m.get("history") or {}
        if h.get("epochs"):
            out.append(("epochs", fmt(len(h["epochs"])),
                        f"best epoch {fmt(h.get('best_epoch', 0) + 1)}, val accuracy {fmt(h.get('best_val_accuracy'))}"))
        seconds = (t or {}).get("seconds", m.get("seconds"))  # timing.json; older runs: the summary
        if seconds is not None:  # a model reused from an earlier run has no training time
            out.append(("time", f"{fmt(seconds)} s", ""))
    elif cmd == "apex" and r:
        n = r.get("n_inputs")
        out.append(("inputs", fmt(n), ""))
        out.append(("clean accuracy", fmt(r.get("clean_accuracy")), r.get("accuracy_note", "")))
        esc = r.get("escape_sigma") or {}
        if esc.get("median") is None:
            out.append(("escape σ (median)", "none escape", "no input escaped on the grid"))
        else:
            out.append(("escape σ (median)", fmt(esc["median"]), f"{fmt(esc.get('n_escaped'))} of {fmt(n)} inputs escape"))
        b = r.get("large_sigma_bias") or {}
        if b:
            out.append(("large-σ dominant class", _label(names, b.get("dominant_class")),
                        f"share {fmt(b.get('dominant_share'))} at σ = {fmt(b.get('sigma'))}"))
        if t:
            out.append(_forwards_card(t))
    elif cmd == "probe" and r:
        rows = r.get("probes") or []
        layers = [p for p in rows if p.get("site") not in ("concat", "head.hook_cls")]
        s = d["summary"].get("settings", {})
        out.append(("train / test inputs", f"{fmt(s.get('n_train'))} / {fmt(s.get('n_test'))}", ""))
        if layers:
            best = max(layers, key=lambda p: p.get("test_accuracy") or 0)
            out.append(("best layer probe", fmt(best.get("test_accuracy")), f"test accuracy at {best['site']}"))
        for p in rows:
            if p.get("site") in ("concat", "head.hook_cls"):
                out.append((f"{p['site']} probe", fmt(p.get("test_accuracy")), "test accuracy"))
        if t:
            out.append(("time", f"{fmt(t.get('seconds'))} s", ""))
    elif cmd == "silence" and r:
        clean = r.get("clean") or {}
        out.append(("clean accuracy", fmt(clean.get("accuracy")), f"weighted F1 {fmt(clean.get('weighted_f1'))}"))
        best = None
        for layer in r.get("layers") or []:
            for row in layer.get("top_k") or []:
                if best is None or (row.get("drop") or 0) > (best[1].get("drop") or 0):
                    best = (layer["site"], row)
        if best:
            site, row = best
            out.append(("largest top-k drop", fmt(row.get("drop")),
                        f"{site}, k = {fmt(row.get('k_percent'))}%, z = {fmt_z(row.get('z'))}, p = {fmt(row.get('p'))}"))
        best = None  # the true-class margin moves where no prediction flips
        for layer in r.get("layers") or []:
            ranked = layer.get("ranked") or {}
            for row in next((v.get("margin") or [] for k, v in ranked.items() if k.startswith("top/")), []):
                if best is None or (row.get("drop") or 0) > (best[1].get("drop") or 0):
                    best = (layer["site"], row)
        if best:
            site, row = best
            out.append(("largest top-k margin drop", fmt(row.get("drop")),
                        f"{site}, k = {fmt(row.get('k_percent'))}%, z = {fmt_z(row.get('z'))}, p = {fmt(row.get('p'))}"))
        if t:
            out.append(_forwards_card(t))
    elif cmd == "attack" and r:
        out.append(("target class", _label(names, r.get("target")), f"{fmt(r.get('k_neurons'))} top neurons attacked"))
        out.append(("clean accuracy", fmt(r.get("clean_accuracy")), f"target share {fmt(r.get('clean_target_share'))}"))
        need = r.get("bias_to_redirect") or {}
        if "0.5" in need:
            out.append(("logit bias for 50%", fmt(need["0.5"]), "smallest bias redirecting half the inputs"))
        if t:
            out.append(("time", f"{fmt(t.get('seconds'))} s", ""))
    return out


# ----------------------------------------------------------------------------- page parts
def _number(text: str, ascending: bool) -> float:
    """A cell as a sort key: its number, with empty and non-numeric cells last either way."""
    try:
        v = float(text)
    except ValueError:
        return math.inf
    return math.inf if math.isnan(v) else (v if ascending else -v)


def _preview(name: str, header: list[str], body: list[list[str]], max_rows: int) -> tuple[list[list[str]], str]:
    """The rows of a long table shown on the page and how they were chosen: by PREVIEW's column
    (largest effects first, each group of its group column its share), else the first rows."""
    by, order, group = PREVIEW.get(name, (None, "", None))
    if by not in header:
        return body[:max_rows], f"the first {min(max_rows, len(body))}"
    col, ascending = header.index(by), order == "asc"
    ranked = sorted(body, key=lambda r: _number(r[col] if col < len(r) else "", ascending))
    word = "smallest" if ascending else "largest"
    if group not in header:
        return ranked[:max_rows], f"the {min(max_rows, len(body))} with the {word} {by}"
    g = header.index(group)
    groups = list(dict.fromkeys(r[g] if g < len(r) else "" for r in body))
    each = max(1, max_rows // len(groups))
    shown = [r for key in groups for r in [r for r in ranked if (r[g] if g < len(r) else "") == key][:each]]
    return shown, f"the {each} with the {word} {by} per {group}"


def _csv_table(folder: Path, name: str, max_rows: int = MAX_ROWS, long: int = LONG_TABLE) -> str:
    """A CSV as an HTML table: all of it up to `long` rows, else `max_rows` of them (`_preview`);
    columns empty in every row are left out (and named); a link to the file."""
    try:
        with open(folder / name, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        return f'<p class="warn">{html.escape(name)} could not be read ({html.escape(str(e))}).</p>'
    if not rows:
        return f'<p class="more">{html.escape(name)} is empty.</p>'
    header, body = rows[0], rows[1:]
    empty = [i for i in range(len(header)) if body and all(i >= len(r) or r[i] == "" for r in body)]
    shown, how = (body, "") if len(body) <= long else _preview(name, header, body, max_rows)
    keep = [i for i in range(len(header)) if i not in empty]
    columns = [[r[i] for r in shown if i < len(r) and r[i] != ""] for i in keep]
    numeric = [bool(col) and all(_cell(v)[1] for v in col) for col in columns]
    parts = ['<div class="scroll"><table><thead><tr>',
             *(f'<th{" class=num" if num else ""}>{_short(header[i], 40)}</th>' for i, num in zip(keep, numeric)),
             "</tr></thead><tbody>"]
    for row in shown:
        parts.append("<tr>")
        for i in keep:
            text = row[i] if i < len(row) else ""
            value, num = _cell(text)
            if header[i] == "z" and value in ("∞", "−∞"):  # the random drops were all equal: no z-score
                value, num = Z_UNDEFINED, False
            parts.append(f'<td class="num">{_short(value)}</td>' if num else f"<td>{_short(value)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    more = (f"showing {how} of {len(body)} rows — " if len(shown) < len(body)
            else f"{len(body)} row{'s' if len(body) != 1 else ''} — ")
    if empty:
        cols = ", ".join(header[i] for i in empty)
        more = f"{cols}: empty in every row, not shown — " + more
    parts.append(f'<p class="more">{html.escape(more)}full table: <a href="{_href(name)}">{html.escape(name)}</a></p>')
    return "".join(parts)


def _rows_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    parts = ['<div class="scroll"><table><thead><tr>', *(f"<th>{html.escape(h)}</th>" for h in header),
             "</tr></thead><tbody>"]
    for row in rows:
        cells = (f'<td class="num">{html.escape(fmt(v))}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else f"<td>{_short(fmt(v))}</td>" for v in row)
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _kv(d: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_short(fmt(v), 240)}</td></tr>" for k, v in d.items())
    return f'<div class="scroll kv"><table class="kv"><tbody>{rows}</tbody></table></div>'


def _png_width(path: Path) -> int:
    """The pixel width of a PNG from its header (0 if unreadable): wide figures get a full row."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return 0
    return int.from_bytes(head[16:20], "big") if head[:8] == b"\x89PNG\r\n\x1a\n" else 0


def png_description(path: Path) -> str:
    """The Description text chunk of a PNG ("" if none or unreadable): what a figure chose to
    show (its σ, its layer), written by `fileio.save_figure` and added to the page's caption."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return ""
    i = 8
    while i + 8 <= len(data):
        n, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        chunk = data[i + 8:i + 8 + n]
        i += 12 + n
        try:
            if kind == b"tEXt":
                key, _, text = chunk.partition(b"\0")
                if key == b"Description":
                    return text.decode("latin-1")
            elif kind == b"iTXt":  # key \0 compressed? method \0 language \0 translated key \0 text (UTF-8)
                key, _, rest = chunk.partition(b"\0")
                if key == b"Description":
                    compressed, rest = rest[0], rest[2:]
                    text = rest.split(b"\0", 2)[2]
                    return (zlib.decompress(text) if compressed else text).decode("utf-8")
            elif kind == b"IEND":
                break
        except (IndexError, ValueError, zlib.error):
            return ""
    return ""


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())


def _ordered(names: Iterable[str], known: Sequence[str]) -> list[str]:
    names = list(names)
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def _entries(folder: Path) -> list[Path]:
    """The folder's top-level entries worth a link (hidden and temporary files left out)."""
    return [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.name != PAGE
            and (p.is_file() or p.is_dir())]


def _history_table(metrics: dict) -> str:
    epochs = (metrics.get("history") or {}).get("epochs") or []
    if not epochs:
        return ""
    keys = list(dict.fromkeys(k for e in epochs for k in e))
    rows = [[e.get(k) + 1 if k == "epoch" else e.get(k) for k in keys] for e in epochs]
    return ('<h3>training history</h3><p class="desc">One row per epoch (from summary.json); the model kept is '
            'the best epoch on the validation split.</p>' + _rows_table(keys, rows))


GENERATOR = '<meta name="generator" content="apex-jax">'  # marks a page as ours: `report` rewrites only those


def _document(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{GENERATOR}<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")


def build_page(folder: str | Path, manifest: dict | None = None) -> str:
    """The HTML of a run folder's page (see the module doc). `manifest` replaces the folder's
    run.json (the run layer passes the final one before writing it)."""
    folder = Path(folder)
    d = _read(folder, manifest)
    m, s = d["manifest"], d["summary"]
    unreadable = (folder / MANIFEST).is_file() and not m  # a truncated or corrupt run.json
    cmd, status = d["command"], ("unreadable run.json" if unreadable else
                                 m.get("status", "complete" if s or d["metrics"] else "unknown"))
    names = (s.get("results") or {}).get("label_names") or []
    entries = _entries(folder)
    files = {p.name for p in entries}
    body = [f'<h1>apex-jax <span class="cmd">{html.escape(cmd)}</span> run '
            f'<span class="badge{"" if status == "complete" else " incomplete"}">{html.escape(status)}</span></h1>',
            f'<p class="sub">{html.escape(str(folder.resolve()))}'
            + (f" · classes: {html.escape(', '.join(f'{i} {n}' for i, n in enumerate(names)))}" if names else "")
            + "</p>"]
    if status != "complete":
        body.append('<p class="warn">This run is not complete (it was interrupted or is still running): the files '
                    'below may be missing or from an earlier attempt. Rerun the same command to resume.</p>')
    cards = headline(folder, m)
    if cards:
        body.append("<h2>Summary</h2><div class=\"cards\">" + "".join(_card(*c) for c in cards) + "</div>")
    figs = _ordered([f for f in files if f.endswith(".png")], list(FIGURES))
    if figs:
        body.append('<h2>Figures</h2><div class="figs">')
        for f in figs:
            cap = " ".join(c for c in (FIGURES.get(f, ""), png_description(folder / f)) if c)
            wide = " class=wide" if _png_width(folder / f) > 900 else ""
            body.append(f'<figure{wide}><a href="{_href(f)}"><img src="{_href(f)}" alt="{html.escape(f)}" loading="lazy"></a>'
                        f'<figcaption><b>{html.escape(f)}</b>{" — " + html.escape(cap) if cap else ""}</figcaption></figure>')
        body.append("</div>")
    tables = _ordered([f for f in files if f.endswith(".csv")], list(TABLES))
    history = _history_table(d["metrics"])
    if tables or history:
        body.append("<h2>Tables</h2>" + history)
        for f in tables:
            desc = TABLES.get(f, "")
            body.append(f"<h3>{html.escape(f)}</h3>" + (f'<p class="desc">{html.escape(desc)}</p>' if desc else "")
                        + _csv_table(folder, f))
    body.append("<h2>Command and versions</h2>")
    argv = m.get("command_line")
    if argv:
        body.append(f"<pre>{html.escape(shlex.join(str(a) for a in argv))}</pre>")
    else:
        body.append('<p class="desc">The command line was not recorded (a run written through the Python API, or '
                    'by an apex-jax version before run.json recorded it).</p>')
    settings = m.get("settings") or s.get("settings") or {}
    if settings:
        body.append("<h3>settings</h3>" + _kv(settings))
    versions = m.get("versions") or s.get("versions") or {}
    if versions:
        body.append("<h3>versions</h3>" + _kv(versions))
    body.append("<h2>Files</h2>")
    rows = []
    for p in entries:
        name = p.name + ("/" if p.is_dir() else "")
        rows.append(f'<tr><td><a href="{_href(name)}">{html.escape(name)}</a></td>'
                    f'<td class="num">{fileio.human_size(_size(p))}</td></tr>')
    body.append('<div class="scroll"><table><thead><tr><th>file</th><th>size</th></tr></thead><tbody>'
                + "".join(rows) + "</tbody></table></div>")
    return _document(f"apex-jax {cmd} — {folder.name}", "\n".join(body))


def write_page(folder: str | Path, manifest: dict | None = None) -> Path:
    """Writes RUN/index.html atomically (see `build_page`); returns its path."""
    folder = Path(folder)
    return fileio.write_text(folder / PAGE, build_page(folder, manifest))


# ----------------------------------------------------------------------------- a folder of runs
def _runs_in(folder: Path) -> list[Path]:
    """The run folders directly inside `folder`, in the demo's order (finetune, apex, probe,
    silence, attack), then by name."""
    def key(p: Path) -> tuple[int, str]:
        cmd = _read(p, None)["command"]
        return (RUN_ORDER.index(cmd) if cmd in RUN_ORDER else len(RUN_ORDER), p.name)

    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run(p)), key=key)


def build_index(folder: str | Path, runs: Sequence[str | Path], title: str = "apex-jax runs") -> str:
    """The HTML of a page linking several run folders inside `folder` (each given relative to
    it): per run its command, status, summary numbers, first figures and a link to its own page.

    Raises:
        InputError: a run that is not a folder inside `folder` (the page links relatively).
    """
    folder = Path(folder)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="sub">{html.escape(str(folder.resolve()))}</p>']
    for run in runs:
        path = Path(folder, run).resolve()
        if not path.is_dir() or not path.is_relative_to(folder.resolve()):
            raise InputError(f"{run} is not a folder inside {folder}; a page links only the runs inside its folder")
        rel = path.relative_to(folder.resolve())
        d = _read(path, None)
        status = d["manifest"].get("status", "complete")
        page = f"{rel.as_posix()}/{PAGE}"
        link = (f'<a href="{_href(page)}">{html.escape(rel.as_posix())}/</a>' if (path / PAGE).is_file()
                else html.escape(rel.as_posix()) + "/")
        body.append(f'<div class="run"><h2>{link} · <span class="cmd">{html.escape(d["command"])}</span> '
                    f'<span class="badge{"" if status == "complete" else " incomplete"}">{html.escape(status)}</span></h2>')
        cards = headline(path)
        if cards:
            body.append('<div class="cards">' + "".join(_card(*c) for c in cards) + "</div>")
        figs = _ordered([p.name for p in _entries(path) if p.name.endswith(".png")], list(FIGURES))[:2]
        if figs:
            body.append('<div class="thumbs">' + "".join(
                f'<a href="{_href(page)}"><img src="{_href(f"{rel.as_posix()}/{f}")}" alt="{html.escape(f)}"></a>'
                for f in figs) + "</div>")
        body.append("</div>")
    return _document(title, "\n".join(body))


def write_index(folder: str | Path, runs: Sequence[str | Path], title: str = "apex-jax runs") -> Path:
    """Writes FOLDER/index.html linking `runs` (see `build_index`) atomically; returns its path."""
    folder = Path(folder)
    return fileio.write_text(folder / PAGE, build_index(folder, runs, title))


def check_reportable(folder: str | Path) -> list[Path]:
    """[] if `folder` is a run folder, the run folders inside it if it is a folder of runs.

    Raises:
        InputError: `folder` is neither (missing, a file, or a folder no apex-jax command wrote).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a run folder (one with {MANIFEST}, written by an "
                         "apex-jax command) or a folder of run folders (such as runs/demo)")
    if is_run(folder):
        _check_page_is_ours(folder)
        return []
    runs = _runs_in(folder)
    if not runs:
        raise InputError(f"{folder} is not an apex-jax run: it has no {MANIFEST} (nor summary.json) "
                         "and no sub-folder is a run; give a folder written by finetune, apex, probe, silence, "
                         "attack or demo")
    for f in [folder, *runs]:
        _check_page_is_ours(f)
    return runs


def _check_page_is_ours(folder: Path) -> None:
    """Refuses to write over an index.html apex-jax did not write: one its run lists, or one
    carrying its generator mark or title (pages from before the mark)."""
    page = folder / PAGE
    if not page.exists():
        return
    listed = PAGE in ((_json(folder / MANIFEST) or {}).get("files") or [])
    try:
        head = page.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        head = ""
    if listed or GENERATOR in head or re.search(r"<title>apex-jax[ :]", head):
        return
    raise InputError(f"{page} was not written by apex-jax, and report never writes over files it did not write: "
                     "move it away, or report a copy of the run folder")


def report(folder: str | Path) -> Path:
    """(Re)builds the page of a run folder — or, for a folder of runs (such as the demo's), the
    page of each run and the page linking them. Returns the page's path.

    Raises:
        InputError: `folder` is neither a run folder nor a folder holding run folders.
    """
    folder = Path(folder)
    runs = check_reportable(folder)
    if not runs:
        manifest = _json(folder / MANIFEST)
        if manifest is not None and "files" in manifest and PAGE not in manifest["files"]:
            # a run from before pages existed: list the page so --overwrite removes it with the run
            # (first, so the page shows the manifest as it stays)
            manifest = {**manifest, "files": sorted([*manifest["files"], PAGE])}
            fileio.write_json(folder / MANIFEST, manifest)
        return write_page(folder, manifest)
    title = index_title(folder) or f"apex-jax runs in {folder.name}"  # the demo's index keeps its title
    for r in runs:
        report(r)
    return write_index(folder, [r.name for r in runs], title)


def index_title(folder: str | Path) -> str | None:
    """The title of the index page a folder of runs already has (None if it has none), so that
    rebuilding the page keeps the title its writer gave it (`apex-jax demo`'s, say)."""
    try:
        text = (Path(folder) / PAGE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.search(r"<title>(.*?)</title>", text, re.S)
    return html.unescape(m.group(1)).strip() or None if m else None
