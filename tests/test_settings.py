"""apex_jax.settings: one definition of every option drives argparse, the run layers and run.json."""

from __future__ import annotations

import dataclasses

import pytest

from apex_jax import cli, settings
from apex_jax.errors import InputError

CLASSES = (settings.FinetuneSettings, settings.ApexSettings, settings.ProbeSettings, settings.SilenceSettings,
           settings.AttackSettings, settings.DemoSettings)


def _subparser(name: str):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.command)
def test_parser_defaults_are_the_settings_defaults(cls):
    """Parsing a bare command gives the settings class's defaults; every field has a flag and a
    help text that shows its default."""
    parser = _subparser(cls.command)
    required = {"finetune": ["m", "--data", "d", "--out", "o"], "apex": ["m", "--data", "d", "--out", "o"],
                "probe": ["m", "--data", "d", "--out", "o"], "demo": [],
                "silence": ["m", "--data", "d", "--out", "o", "--probe", "p"],
                "attack": ["m", "--data", "d", "--out", "o", "--probe", "p"]}[cls.command]
    args = parser.parse_args(required)
    assert settings.from_args(cls, args) == cls()
    text = parser.format_help()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            shown = formatter._get_help_string(action)
            assert action.help and ("(default" in shown or action.required), action.option_strings
    assert text.rstrip().splitlines()[-1].strip().startswith("apex-jax " + cls.command)  # ends with an example


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("apex-jax 0.")


@pytest.mark.parametrize("kwargs,message", [
    ({"draws": 0}, "--draws must be a positive integer (>= 1); got 0"),
    ({"threshold": 0.0}, "--threshold must lie in (0, 1]"),
    ({"threshold": float("nan")}, "--threshold must be a number"),
    ({"dtype": "float16"}, "--dtype must be one of float32, bfloat16"),
    ({"sigmas": "0.1,0.1"}, "repeat"),
    ({"sigmas": [-1.0, 2.0]}, ">= 0"),
])
def test_ranges_are_checked_when_made(kwargs, message):
    with pytest.raises(InputError) as e:
        settings.ApexSettings(**kwargs)
    assert message in str(e.value)


def test_spec_strings_become_values_and_record_what_determines_a_result():
    a = settings.ApexSettings(sigmas="0.5,1", sites=["hook_embed", "blocks.0.hook_resid_post"], chunk_size=7)
    assert a.sigmas == (0.5, 1.0) and a.sites == "hook_embed,blocks.0.hook_resid_post"
    assert a == settings.ApexSettings(sigmas=(0.5, 1.0), sites="hook_embed,blocks.0.hook_resid_post", chunk_size=7)
    rec = a.record()
    assert rec["sigmas"] == [0.5, 1.0] and "chunk_size" not in rec  # the chunk size cannot change a result
    s = settings.SilenceSettings(k="5,10", controls="mean,attribution")
    assert s.k == (5.0, 10.0) and s.controls == "attribution,mean" and s.control_set == {"attribution", "mean"}
    assert s.asymmetry_level == 5.0 + 5.0 and settings.SilenceSettings(k="5,20,50").asymmetry_level == 20.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.draws = 3


def test_of_applies_keywords_and_names_unknown_ones():
    base = settings.ProbeSettings(steps=10)
    assert settings.ProbeSettings.of(base, l1=0.0) == settings.ProbeSettings(steps=10, l1=0.0)
    with pytest.raises(InputError, match="no option sigma.*valid options: n_train"):
        settings.ProbeSettings.of(None, sigma=1.0)
    with pytest.raises(InputError, match="expected ProbeSettings"):
        settings.ProbeSettings.of(settings.ApexSettings())
