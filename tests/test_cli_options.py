"""Every command's options map 1:1 to the fields of its config dataclass, and none repeats a default (STYLE §6).

An option that is not required defaults to None, meaning "not set": the dataclass holds the only default, and a help
text that states a default states the dataclass's. The few
names on either side that have no partner are listed per command below, each with the reason. Every CLI reports a
wrong option the same way: one red line `error: ...` and exit code 2 (infra.usage.fail).
"""
from __future__ import annotations

import re
from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from eval.chat_cli import app as chat_app
from eval.cli import app as eval_app
from eval.config import ChatConfig, EvalConfig, ScoreConfig
from manifests.build import ManifestConfig
from pipeline.cli import app as pipeline_app
from pipeline.extract.clip import ClipConfig
from pipeline.extract.job import ExtractConfig
from pipeline.inspect.summary import InspectConfig
from pipeline.qa.build import BuildQaConfig
from pipeline.qa.import_vtimellm import ImportConfig
from pipeline.synth.dataset import SynthConfig
from train.cli import app as train_app
from train.config import TrainConfig
from train.import_cli import ImportWeightsConfig
from train.import_cli import app as import_weights_app

CLIP_OPTIONS = {"model": "clip_model", "weights": "clip_weights", "pretrained": "clip_pretrained",
                "fast_resize": "fast_resize", "device": "device"}
"""extract: ClipConfig's fields, as extract's options name them (`--clip-model` ↔ ClipConfig.model)."""


def _names(config, drop=()) -> set[str]:
    return {f.name for f in fields(config)} - set(drop)


# command: (typer app, subcommand or None, the field names the options must match, options without a field)
COMMANDS = {
    "vtl-pipeline inspect": (pipeline_app, "inspect", _names(InspectConfig), set()),
    "vtl-pipeline manifest": (pipeline_app, "manifest", _names(ManifestConfig), set()),
    # --task: the retired spelling of --benchmark, kept only to stop with a message naming the new one.
    "vtl-pipeline build-qa": (pipeline_app, "build-qa", _names(BuildQaConfig), {"task"}),
    "vtl-pipeline import-vtimellm": (pipeline_app, "import-vtimellm", _names(ImportConfig), set()),
    "vtl-pipeline synth": (pipeline_app, "synth", _names(SynthConfig), set()),
    # ExtractConfig.clip is built from the clip options; ClipConfig.seed (tiny-random weights) is not an option.
    "vtl-pipeline extract": (pipeline_app, "extract",
                             _names(ExtractConfig, {"clip"}) | {CLIP_OPTIONS[n] for n in _names(ClipConfig, {"seed"})},
                             set()),
    # --task: retired spelling of --benchmark (an error naming it).
    "vtl-eval score": (eval_app, "score", _names(ScoreConfig), {"task"}),
    # EvalConfig.benchmark is the subcommand itself.
    "vtl-eval grounding": (eval_app, "grounding", _names(EvalConfig, {"benchmark"}), set()),
    "vtl-eval dvc": (eval_app, "dvc", _names(EvalConfig, {"benchmark"}), set()),
    "vtl-chat": (chat_app, None, _names(ChatConfig), set()),
    # TrainConfig.world_size comes from the launcher's WORLD_SIZE; --local-rank is set by the deepspeed launcher.
    "vtl-train": (train_app, None, _names(TrainConfig, {"world_size"}), {"local_rank"}),
    "vtl-import-weights": (import_weights_app, None, _names(ImportWeightsConfig), set()),
}


def _params(app, sub):
    cmd = typer.main.get_command(app)
    return (cmd.commands[sub] if sub else cmd).params


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options_map_one_to_one_to_config_fields(command):
    app, sub, field_names, cli_only = COMMANDS[command]
    names = {p.name for p in _params(app, sub)}
    assert names - cli_only == field_names, (f"options without a field: {sorted(names - cli_only - field_names)}; "
                                             f"fields without an option: {sorted(field_names - names)}")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options_leave_defaults_to_the_config(command):
    app, sub, _, _ = COMMANDS[command]
    repeated = {p.name: p.default for p in _params(app, sub) if not p.required and p.default is not None}
    assert not repeated, f"{command}: these options repeat a default (use None = not set): {repeated}"


OPTION_FIELD = {"vtl-pipeline extract": {CLIP_OPTIONS[n]: (ClipConfig, n) for n in CLIP_OPTIONS}}
"""Options whose field is in another dataclass than the command's own."""
CONFIGS = {"vtl-pipeline inspect": InspectConfig, "vtl-pipeline manifest": ManifestConfig,
           "vtl-pipeline build-qa": BuildQaConfig, "vtl-pipeline import-vtimellm": ImportConfig,
           "vtl-pipeline synth": SynthConfig, "vtl-pipeline extract": ExtractConfig, "vtl-eval score": ScoreConfig,
           "vtl-eval grounding": EvalConfig, "vtl-eval dvc": EvalConfig, "vtl-chat": ChatConfig,
           "vtl-train": TrainConfig, "vtl-import-weights": ImportWeightsConfig}
STATED = (re.compile(r"\bdefault (?!:)(.+?)(?:\)|;|\.?$)"), re.compile(r"(\S+) \(default[);]"))
"""How a help text states a default: "(default 0.2)" / "...; default 1000)", or "auto (default)". "default: ..."
explains a default that is not a value (derived, or from elsewhere) and is not checked."""


def _render(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(map(_render, value))
    return str(value)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_defaults_stated_in_help_are_the_configs(command):
    """A help text may say what the default is (--help no longer shows one), but only the dataclass's own value."""
    app, sub, _, _ = COMMANDS[command]
    defaults = {f.name: f.default for f in fields(CONFIGS[command])}
    for param in _params(app, sub):
        config, name = OPTION_FIELD.get(command, {}).get(param.name, (CONFIGS[command], param.name))
        default = {f.name: f.default for f in fields(config)}.get(name, defaults.get(name))
        for pattern in STATED:
            for stated in pattern.findall(getattr(param, "help", None) or ""):
                assert stated == _render(default), f"{command} --{param.name}: help says {stated!r}, config {default!r}"


def _error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (res.exit_code, res.output)
    return lines[0]


def test_retired_spellings_name_the_new_one(tmp_path):
    runner = CliRunner()
    res = runner.invoke(pipeline_app, ["build-qa", "--stage", "eval", "--features", str(tmp_path), "--out",
                                       str(tmp_path / "o")])
    assert "--benchmark grounding|dvc" in _error_line(res)
    res = runner.invoke(pipeline_app, ["build-qa", "--task", "dvc", "--features", str(tmp_path), "--out",
                                       str(tmp_path / "o")])
    assert "--benchmark dvc" in _error_line(res)
    res = runner.invoke(eval_app, ["score", "--task", "grounding", "--predictions", str(tmp_path / "p.jsonl"),
                                   "--annotations", str(tmp_path)])
    assert "--benchmark grounding" in _error_line(res)


def test_every_cli_reports_a_wrong_option_in_one_red_line(tmp_path):
    runner = CliRunner()
    missing = str(tmp_path / "missing")
    assert "not a folder" in _error_line(runner.invoke(pipeline_app, ["inspect", missing]))
    assert "not found" in _error_line(runner.invoke(eval_app, ["score", "--benchmark", "grounding", "--predictions",
                                                               missing, "--annotations", missing]))
    assert "not found" in _error_line(runner.invoke(chat_app, [missing, "--checkpoint", missing]))
    assert "not found" in _error_line(runner.invoke(import_weights_app, ["--llm", "x", "--mm-projector", missing,
                                                                         "--out", str(tmp_path / "o")]))
    assert "not divisible" in _error_line(runner.invoke(train_app, ["--stage", "1", "--shards", "s", "--llm", "x",
                                                                    "--out", str(tmp_path), "--micro-batch", "3"]))
