"""The option generator (infra.options) and every CLI built with it.

The generator: field types map to option types, options default to None ("not set") and the command receives only
the options that were set, help comes from the field docstrings, overrides rename / hide / pair / parse, a repeated
option is refused, fields without a default are required. The CLIs: each command's options are its config's fields
(the exceptions listed, each with its reason), help stating a default states the dataclass's, and every CLI reports
a wrong option in one red line `error: ...` with exit code 2 (infra.usage.fail).
"""
from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from eval.chat_cli import app as chat_app
from eval.cli import app as eval_app
from eval.config import ChatConfig, EvalConfig, ScoreConfig
from infra.options import Group, cli_type, field_docs, flag, options
from infra.usage import strict_command_class
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
from train.export import ExportConfig
from train.export_cli import app as export_app
from train.import_cli import ImportWeightsConfig
from train.import_cli import app as import_weights_app


@dataclass(frozen=True)
class Toy:
    """A config for the generator's tests.

    legacy: documented in the class docstring, as some configs are.
    """

    name: str
    """The required one."""
    where: str | Path | None = None
    """A path or a URL."""
    count: int = 3
    """How many."""
    ratio: float = 0.5
    tags: tuple[str, ...] = ("a",)
    """Tags."""
    loud: bool = False
    """Turn it on."""
    bar: bool = True
    """A switch."""
    legacy: int = 0
    span: tuple[int, int] | None = None
    """Least and most."""


@dataclass(frozen=True)
class Other:
    size: int = 7
    """Size of the other."""


def _toy_app(received: list, **kw) -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command(cls=strict_command_class())
    @options(Toy, **kw)
    def run(given: dict) -> None:
        """The toy command."""
        received.append(given)

    return app


TOY_FLAGS = {"count": flag("--count", "-n"), "bar": flag(switch=True), "legacy": flag(hidden=True),
             "span": flag(type=str, parse=lambda t: tuple(map(int, t.split("-"))))}


def _run(args, **kw):
    received: list = []
    res = CliRunner().invoke(_toy_app(received, **{"flags": TOY_FLAGS, **kw}), args)
    return res, (received[0] if received else None)


def test_type_mapping():
    assert cli_type(int) is int and cli_type(Path) is Path and cli_type(bool) is bool
    assert cli_type(int | None) is int and cli_type(str | Path | None) is str
    assert cli_type(tuple[float, ...]) == list[float]
    for bad in (dict, tuple[int, int], int | float):
        with pytest.raises(TypeError, match="Flag"):
            cli_type(bad)


def test_options_not_given_are_not_set_and_values_are_typed():
    res, given = _run(["--name", "x"])
    assert res.exit_code == 0, res.output
    assert given == {"name": "x"}  # the dataclass supplies every other value
    assert Toy(**given).count == 3
    res, given = _run(["--name", "x", "-n", "5", "--ratio", "0.25", "--tags", "b", "--tags", "c", "--loud",
                       "--no-bar", "--where", "s3://b/k", "--span", "1-2", "--legacy", "4"])
    assert res.exit_code == 0, res.output
    assert given == {"name": "x", "count": 5, "ratio": 0.25, "tags": ("b", "c"), "loud": True, "bar": False,
                     "where": "s3://b/k", "span": (1, 2), "legacy": 4}


def test_help_from_docstrings_with_the_dataclass_default():
    res = CliRunner().invoke(_toy_app([], flags=TOY_FLAGS), ["--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    for expected in ("The required one.", "How many. (default: 3)", "Tags. (repeatable) (default: a)",
                     "A switch. (default: on)", "--no-bar", "-n", "(default: 0.5)", "The toy command."):
        assert expected in text, expected
    assert "--legacy" not in text  # hidden
    assert field_docs(Toy)["legacy"] == "documented in the class docstring, as some configs are."
    assert "ratio" not in field_docs(Toy)
    plain = CliRunner().invoke(_toy_app([], flags=TOY_FLAGS, show_defaults=False), ["--help"]).output
    assert "How many." in plain and "(default: 3)" not in plain


def test_required_fields_and_a_repeated_option_are_refused():
    res, given = _run([])
    assert res.exit_code == 2 and given is None and "--name" in res.output
    for args in (["--name", "x", "--count", "1", "-n", "2"], ["--name", "x", "--bar", "--no-bar"]):
        res, given = _run(args)
        assert res.exit_code == 2 and given is None and "given more than once" in res.output, res.output
    res, given = _run(["--name", "x", "--tags", "a", "--tags", "a"])  # a repeatable option may repeat
    assert res.exit_code == 0 and given["tags"] == ("a", "a")


def test_groups_extra_options_skip_and_unknown_overrides():
    group = Group(Other, {"size": "other_size"})
    res, given = _run(["--name", "x", "--other-size", "9", "--old", "y"], groups=(group,), skip=("legacy",),
                      flags={"span": TOY_FLAGS["span"]}, extra={"old": flag("--old", type=str)})
    assert res.exit_code == 0, res.output
    assert group.take(given) == {"size": 9} and given == {"name": "x", "old": "y"}
    res, _ = _run(["--name", "x", "--legacy", "1"], skip=("legacy",), flags={"span": TOY_FLAGS["span"]})
    assert res.exit_code == 2
    with pytest.raises(TypeError, match="no field"):
        options(Toy, flags={"nope": flag()})


# command: (typer app, subcommand or None, the config, its fields with no option, options with no field)
COMMANDS = {
    "vtl-pipeline inspect": (pipeline_app, "inspect", InspectConfig, set(), set()),
    "vtl-pipeline manifest": (pipeline_app, "manifest", ManifestConfig, set(), set()),
    # --task: the retired spelling of --benchmark, kept only to stop with a message naming the new one.
    "vtl-pipeline build-qa": (pipeline_app, "build-qa", BuildQaConfig, set(), {"task"}),
    "vtl-pipeline import-vtimellm": (pipeline_app, "import-vtimellm", ImportConfig, set(), set()),
    "vtl-pipeline synth": (pipeline_app, "synth", SynthConfig, set(), set()),
    # ExtractConfig.clip is built from the CLIP options (ClipConfig.seed, of the tiny-random weights, is not one).
    "vtl-pipeline extract": (pipeline_app, "extract", ExtractConfig, {"clip"},
                             {"clip_model", "clip_weights", "clip_pretrained", "fast_resize", "device", "encoder",
                              "frames", "fps", "max_frames", "tokens_per_frame"}),
    "vtl-eval score": (eval_app, "score", ScoreConfig, set(), {"task"}),
    # EvalConfig.benchmark is the subcommand itself.
    "vtl-eval grounding": (eval_app, "grounding", EvalConfig, {"benchmark", "annotations"}, set()),
    "vtl-eval dvc": (eval_app, "dvc", EvalConfig, {"benchmark", "annotations"}, set()),
    "vtl-eval qvhighlights": (eval_app, "qvhighlights", EvalConfig, {"benchmark"}, set()),
    "vtl-chat": (chat_app, None, ChatConfig, set(), set()),
    # TrainConfig.world_size comes from the launcher's WORLD_SIZE; --local-rank is set by the deepspeed launcher.
    "vtl-train": (train_app, None, TrainConfig, {"world_size"}, {"local_rank"}),
    "vtl-import-weights": (import_weights_app, None, ImportWeightsConfig, set(), set()),
    "vtl-export": (export_app, None, ExportConfig, set(), set()),
}


def _params(app, sub):
    cmd = typer.main.get_command(app)
    return (cmd.commands[sub] if sub else cmd).params


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_options_are_its_config_fields(command):
    app, sub, config, no_option, no_field = COMMANDS[command]
    params = _params(app, sub)
    assert {p.name for p in params} - no_field == {f.name for f in fields(config)} - no_option
    for p in params:
        assert p.required or p.default is None, f"{command} --{p.name} repeats a default: {p.default!r}"
        assert p.hidden if p.name in ("task", "local_rank", "timestamp_shift") else (p.help or "").strip(), p.name
    required = {p.name for p in params if p.required}
    # score's --benchmark is checked by the command, after the retired --task gets its own message
    assert required == {f.name for f in fields(config) if f.default is MISSING is f.default_factory} - no_option \
        - {"benchmark"}


FLAG_NAMES = {  # names that are not `--field-name`: scripts and docs use them
    ("vtl-pipeline inspect", "keys"): ["--key"], ("vtl-pipeline inspect", "as_json"): ["--json"],
    ("vtl-pipeline manifest", "options"): ["--option", "-o"], ("vtl-chat", "question"): ["--question", "-q"],
    ("vtl-train", "from_checkpoint"): ["--from"], ("vtl-train", "local_rank"): ["--local_rank", "--local-rank"],
    ("vtl-import-weights", "adapters"): ["--adapter"],
}
SWITCHES = {"progress", "gradient_checkpointing", "group_by_length", "pack"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_flag_names_kept(command):
    app, sub, _, _, _ = COMMANDS[command]
    for p in _params(app, sub):
        if isinstance(p, typer.core.TyperArgument):
            assert p.name in ("shard_dir", "video", "checkpoint")
            continue
        assert p.opts == FLAG_NAMES.get((command, p.name), ["--" + p.name.replace("_", "-")]), p.name
        assert bool(p.secondary_opts) == (p.name in SWITCHES), p.name


STATED = (re.compile(r"[(;] ?default (?!:)([^);]+)[);]"), re.compile(r"(\S+) \(default[);]"))
"""How a hand-written help text states a default: "(default 0.2)" / "...; default 1000)", or "auto (default)"."""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_defaults_stated_in_help_are_the_configs(command):
    app, sub, config, _, _ = COMMANDS[command]
    defaults = {f.name: f.default for c in (config, ClipConfig) for f in fields(c)}
    defaults.update({f"clip_{f.name}": f.default for f in fields(ClipConfig)})
    for param in _params(app, sub):
        for pattern in STATED:
            for stated in pattern.findall(param.help or ""):
                assert stated.strip('"`') == str(defaults[param.name]), f"{command} --{param.name}: {stated!r}"


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


@pytest.mark.parametrize("app, args", [
    (pipeline_app, ["inspect", "d", "--scan", "1", "--scan", "2"]),
    (eval_app, ["dvc", "--checkpoint", "c", "--shards", "s", "--out", "o", "--llm", "a", "--llm", "b"]),
    (chat_app, ["v", "--checkpoint", "c", "--clip-model", "a", "--clip-model", "b"]),
    (train_app, ["--stage", "1", "--shards", "s", "--llm", "x", "--out", "o", "--lr", "1", "--lr", "2"]),
    (import_weights_app, ["--llm", "x", "--llm", "y", "--mm-projector", "m", "--out", "o"]),
])
def test_every_cli_refuses_an_option_given_twice(app, args):
    assert "given more than once" in _error_line(CliRunner().invoke(app, args))
