"""The `apex-jax` command line: argv -> a settings object -> a run layer -> a few printed lines.

Every option of a command is defined once, in its settings class (`apex_jax.settings`), which
generates the options below, is what the Python run layer takes and what the run folder records.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Sequence

from apex_jax import assets, console, run_page, runs
from apex_jax import settings as settings_lib
from apex_jax.apex.run import apex_run
from apex_jax.demo import demo_run
from apex_jax.engine.compile_cache import enable_compile_cache
from apex_jax.models import load
from apex_jax.synapse.run import attack_run, probe_run, silence_run
from apex_jax.training import finetune_run
from apex_jax.errors import ApexJaxError, CheckpointError, describe_os_error
from apex_jax.version import __version__

DESCRIPTION = """\
Probe transformer models by perturbing their hidden activations at scale.

  APEX     Gaussian noise on hidden activations, many draws per input: how far each input's
           prediction holds (escape σ), where it moves (transitions), what large noise favours.
  SYNAPSE  linear probes on each layer's [CLS] vector, neuron rankings, silencing the top-ranked
           neurons against random ones, and attacks on the classifier head.

Every command that writes --out keeps a run folder: run.json (the settings that determine the
result, the model's and data's sha256, versions, status), summary.json, CSV tables, figures and a
page, RUN/index.html. The same command on the same folder resumes; other settings are refused
unless --overwrite. Bad inputs exit with status 2 and a message; Ctrl-C exits 130 (rerun the same
command to resume).

Start with `apex-jax demo` (fine-tunes MiniLM on VADER movie reviews, then runs everything)."""

MODEL_HELP = ("a model: minilm, smollm2 (a causal LM: with --labels, or fine-tuned), a Hugging Face folder "
              "(config.json + safetensors), or a hub id when online")
DATA_HELP = ("a data set: vader-movies, vader-tweets, vader-amazon, vader-nyt, banking77, mnist5k, digits, or a .csv "
             "(columns text[,label]; others: --text-column, --label-column) / .jsonl / .npz file; apex needs no "
             "labels, and uses a file whole unless --split says otherwise")


# ----------------------------------------------------------------------------- commands
def _run(args: argparse.Namespace, settings) -> int:
    """A command that runs a model on data: its run layer, then the lines `console` makes."""
    layer = RUN_LAYERS[args.command]
    positional = [args.model, args.data, *([args.probe] if hasattr(args, "probe") else []), args.out]
    summary = layer(*positional, settings, overwrite=args.overwrite, progress=not args.quiet, log=print)
    for line in console.lines(settings.command, summary, args.out):
        print(line)
    return 0


def _demo(args, settings) -> int:
    demo_run(args.out, settings, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _fetch_assets(args, _settings) -> int:
    assets.fetch_assets(args.names or None)
    return 0


def _sites(args, _settings) -> int:
    model = load(args.model)
    print(model)
    for site in model.sites:
        print(site)
    return 0


def _report(args, _settings) -> int:
    for folder in args.runs:  # check every folder before writing any page
        run_page.check_reportable(folder)
    for folder in args.runs:
        print(run_page.report(folder))
    return 0


# ----------------------------------------------------------------------------- parser
RUN_LAYERS = {"finetune": finetune_run, "apex": apex_run, "probe": probe_run, "silence": silence_run,
              "attack": attack_run}
# (name, settings class, one-line help, reads --probe)
RUN_COMMANDS = (
    ("finetune", settings_lib.FinetuneSettings, "fine-tune (or train from scratch) a classifier", False),
    ("apex", settings_lib.ApexSettings, "APEX: consistency under activation noise, escape σ, transitions, bias", False),
    ("probe", settings_lib.ProbeSettings, "SYNAPSE: per-layer [CLS] probes (Optax), neuron rankings", False),
    ("silence", settings_lib.SilenceSettings, "SYNAPSE: silence top/bottom/random k%% [CLS] neurons per layer", True),
    ("attack", settings_lib.AttackSettings, "SYNAPSE: logit bias, weight push and bit flips toward a class", True),
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default shown once ("off" for flags, "none" for unset), the description as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "(default" in text:
            return text
        if action.nargs == 0:  # a flag
            return text if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) else \
                text + (" (default: on)" if action.default else " (default: off)")
        return text + (" (default: none)" if action.default is None else " (default: %(default)s)")


def _example(text: str) -> str:
    return f"example:\n  {text}"


def _common(s: argparse.ArgumentParser, out_default: str | None = None) -> None:
    if out_default is None:
        s.add_argument("--out", required=True, metavar="RUN", help="the run folder (created; a folder of the same "
                       "command and settings resumes)")
    else:
        s.add_argument("--out", default=out_default, metavar="RUN", help="the folder of the demo's runs")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a previous run with other settings in --out (its listed files and sweep "
                        "checkpoints are removed first); without it such a folder is refused")
    s.add_argument("--quiet", action="store_true",
                   help="no progress reports (else a bar with rate and ETA on a terminal, a line every ~10%% "
                        "or 30 s when stderr is not one)")


def build_parser() -> argparse.ArgumentParser:
    """The `apex-jax` argument parser (one subcommand per command, options from the settings)."""
    p = argparse.ArgumentParser(prog="apex-jax", description=DESCRIPTION, formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"apex-jax {__version__}")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (also: APEX_JAX_NO_COMPILE_CACHE=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, example: str, fn, settings=None) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help.replace("%%", "%"), epilog=_example(example),
                           formatter_class=_HelpFormatter)
        s.set_defaults(fn=fn, settings_class=settings)
        return s

    for name, cls, help, needs_probe in RUN_COMMANDS:
        s = command(name, help, cls.example, _run, cls)
        s.add_argument("model", help=MODEL_HELP + (", or a ViT preset (trained from scratch)" if name == "finetune"
                                                   else ""))
        s.add_argument("--data", required=True, help=DATA_HELP)
        if needs_probe:
            s.add_argument("--probe", required=True, metavar="RUN", help="a run folder written by `apex-jax probe`")
        _common(s)
        settings_lib.add_options(s, cls)

    s = command("demo", "fine-tune MiniLM on vader-movies, then run APEX and SYNAPSE on it",
                settings_lib.DemoSettings.example, _demo, settings_lib.DemoSettings)
    _common(s, out_default="runs/demo")
    settings_lib.add_options(s, settings_lib.DemoSettings)

    s = command("fetch-assets", "copy the offline assets (model, data sets) into the cache",
                "apex-jax fetch-assets minilm vader", _fetch_assets)
    s.add_argument("names", nargs="*", metavar="NAME", help="minilm, vader, mnist5k, banking77, digits, smollm2 (none: all but smollm2, which `make test` fetches)")

    s = command("sites", "list a model's activation sites", "apex-jax sites minilm", _sites)
    s.add_argument("model", help=MODEL_HELP)

    s = command("report", "(re)build the page RUN/index.html of run folders (or of a folder of runs)",
                "apex-jax report runs/demo", _report)
    s.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or a folder of runs such as runs/demo")
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop): handled like Ctrl-C, so the run stops resumable."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command. Bad inputs (ApexJaxError, ValueError, a corrupt checkpoint) and refused
    writes (OSError: disk full, read-only, path too long, ...) print one line "apex-jax COMMAND:
    error: ..." naming the path and the fix, and return 2; Ctrl-C returns 130, SIGTERM 143 (both
    leave the run folder resumable)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        settings = settings_lib.from_args(args.settings_class, args) if args.settings_class else None
        if not args.no_compile_cache and os.environ.get("APEX_JAX_NO_COMPILE_CACHE", "") in ("", "0"):
            try:
                enable_compile_cache()
            except OSError as e:  # a speed-up only: the run goes on without it
                print(f"apex-jax {args.command}: note: compilation cache off ({describe_os_error(e)})",
                      file=sys.stderr)
        with runs.command_line(["apex-jax", *(sys.argv[1:] if argv is None else argv)]):
            return args.fn(args, settings)
    except KeyboardInterrupt as e:
        how = "terminated" if isinstance(e, _Terminated) else "interrupted"
        print(f"apex-jax {args.command}: {how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except (ApexJaxError, CheckpointError, ValueError, OSError) as e:  # OSError: e.g. disk full, permissions
        message = describe_os_error(e) if isinstance(e, OSError) else str(e)
        print(f"apex-jax {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
