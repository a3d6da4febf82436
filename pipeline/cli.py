"""`vtl-pipeline`: manifest, download, extract, build-qa, import-vtimellm, inspect, synth.

Thin by design: each command's options are generated from the frozen config of its module (infra.options: field
type, default and docstring), the command builds that config from the options that were set, calls one function and
prints where the outputs went. Heavy libraries (torch, ray, decord, open_clip) are imported inside the called
functions, so `vtl-pipeline --help` stays instant.
"""
from __future__ import annotations

import typer

from infra.options import Group, flag, options
from infra.usage import fail, strict_command_class
from manifests.build import ManifestConfig
from pipeline.download.config import DownloadConfig
from pipeline.extract.clip import CLIP_OPTIONS, ClipConfig
from pipeline.extract.config import ExtractConfig
from pipeline.inspect.summary import InspectConfig
from pipeline.qa.build import BuildQaConfig
from pipeline.qa.import_vtimellm import ImportConfig
from pipeline.synth.dataset import SynthConfig

app = typer.Typer(help="vtl data pipeline: manifests → CLIP feature shards → training shards.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
STRICT = strict_command_class()
"""Every command refuses an option given twice (the last would silently win)."""
PROGRESS = flag(switch=True)
RENAMED = {"task": flag("--task", type=str, hidden=True, help="Renamed: --benchmark.")}
"""The retired spelling of --benchmark, kept only to stop with a message naming the new one."""


@app.command("inspect", cls=STRICT)
@options(InspectConfig, flags={"shard_dir": flag(argument=True), "keys": flag("--key"), "as_json": flag("--json")})
def inspect_cmd(given: dict) -> None:
    """Summarise a shard folder; render samples; verify shards against the index."""
    from pipeline.inspect.summary import run

    try:
        code = run(InspectConfig(**given))
    except (ValueError, OSError) as e:  # a damaged folder (pipeline.contract.checked) or an unreadable file
        fail(e)
    raise typer.Exit(code)


def _parse_options(items: tuple[str, ...]) -> dict:
    """`-o name=value` pairs; values are read as JSON where they parse (numbers, true/false), else as text."""
    import json

    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--option takes name=value, got {item!r}")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


@app.command(cls=STRICT)
@options(ManifestConfig, flags={
    "dataset": flag(help="activitynet | youcook2 | charades | didemo | qvhighlights | internvid | lcc | vtimellm | "
                          "files"),
    **{name: flag(type=str) for name in ("annotations", "out", "durations", "media_root")},  # staged: paths or URLs
    "options": flag("--option", "-o", type=list[str], parse=_parse_options,
                    help="Reader option name=value, repeatable (e.g. max_window_s=120)."),
})
def manifest(given: dict) -> None:
    """Read a dataset's annotations into a Parquet manifest; print kept / flagged / rejected counts."""
    from rich.console import Console

    from manifests.build import build_manifest
    from manifests.report import summary_table
    from pipeline.contract.provenance import producer
    from pipeline.staging import staged_manifest

    try:
        with staged_manifest(given["annotations"], given["out"], given.get("durations"),
                             given.get("media_root")) as staged:
            cfg = ManifestConfig(**{**given, "annotations": staged.annotations, "out": staged.out,
                                    "durations": staged.durations, "media_root": staged.media_root})
            result, path, errors = build_manifest(cfg, producer(), staged.origin)
            path, errors = staged.commit(path, errors)
    except (ValueError, OSError, TypeError) as exc:  # OSError: an unreadable input or unwritable --out
        fail(exc)
    Console().print(summary_table(cfg.dataset, result, path, errors))


@app.command("build-qa", cls=STRICT)
@options(BuildQaConfig, flags={"progress": PROGRESS, "timestamp_shift": flag(hidden=True)}, extra=RENAMED)
def build_qa_cmd(given: dict) -> None:
    """Feature shards → training shards with conversation.json (--stage 1|2|3) or evaluation queries (--benchmark)."""
    from pipeline.qa.build import run_build_qa, summarize

    if "task" in given:
        fail(f"--task is now --benchmark: use --benchmark {given['task']}")
    try:
        result = run_build_qa(BuildQaConfig(**given))
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    summarize(result)
    _report(result)


@app.command("import-vtimellm", cls=STRICT)
@options(ImportConfig, flags={"progress": PROGRESS})
def import_vtimellm_cmd(given: dict) -> None:
    """VTimeLLM's released JSON + {id}.npy features → training shards (missing features become error records)."""
    from pipeline.qa.import_vtimellm import run_import, summarize

    try:
        result = run_import(ImportConfig(**given))
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    summarize(result)
    _report(result)


def _report(result) -> None:
    """build-qa's and import-vtimellm's summary; exit 1 when no sample was written (nothing was produced)."""
    typer.echo(f"wrote {result.samples} samples ({result.errors} errors) to {result.out}")
    if result.samples == 0:
        fail(f"no sample written: every input became an error record (see {result.out}/errors.jsonl)", code=1)


def _event_range(text: str) -> tuple[int, int]:
    """`--events` "3" → (3, 3), "1-2" → (1, 2); anything else is a usage error."""
    least, _, most = text.partition("-")
    try:
        return int(least), int(most or least)
    except ValueError:
        fail(f"--events must be N or LEAST-MOST, got {text!r}")


@app.command("synth", cls=STRICT)
@options(SynthConfig, flags={"events": flag(type=str, parse=_event_range, help="Events per video: N, or LEAST-MOST "
                                            "drawn uniformly (default: 2-4, 2 in videos shorter than 8 s).")})
def synth_cmd(given: dict) -> None:
    """Generate a synthetic grounding dataset (videos with known event spans) in ActivityNet/LLaVA/VTimeLLM formats."""
    from pipeline.synth.dataset import generate

    try:
        cfg = SynthConfig(**given)
    except ValueError as e:
        fail(e)
    info = generate(cfg)
    c = info["counts"]
    typer.echo(f"{c['videos']} videos ({c['train']} train, {c['test']} test, {c['events']} events, "
               f"{c['frames']} frames), {c['images']} images, {c['dialogues']} stage-3 dialogues → {cfg.out}")
    for name, rel in info["files"].items():
        typer.echo(f"  {name:15s} {cfg.out / rel}")


ENCODER = Group(ClipConfig, {"fast_resize": "fast_resize", "device": "device", "encoder": "encoder",
                              "frames": "frames", "fps": "fps", "max_frames": "max_frames",
                              "tokens_per_frame": "tokens_per_frame"})
"""Extract's other encoder options (`--fast-resize`, `--device`, `--encoder`, `--frames`, `--fps`, `--max-frames`,
`--tokens-per-frame`): ClipConfig fields without the `--clip-` prefix."""


@app.command("extract", cls=STRICT)
@options(ExtractConfig, skip=("clip",), groups=(CLIP_OPTIONS, ENCODER), flags={
    "manifest": flag(help="Manifest (.parquet); overrides --dataset's. Paths and --out/--data-root may be s3:// or "
                     "gs:// URLs."),
    "out": flag(help="Shard folder; overrides --dataset's."),
    "address": flag(help="Ray cluster to join (auto | HOST:PORT | ray://host:port; token auth: docs/cluster.md); "
                    "default: start Ray on this machine."),
    "progress": flag(switch=True, help="Show a progress bar.")})
def extract_cmd(given: dict) -> None:
    """Decode videos, sample frames (100 per video by default) and write encoder features to shards (resumable Ray
    job)."""
    from pipeline.extract.job import ExtractError, run_extract
    from pipeline.extract.report import print_summary

    try:
        clip = ClipConfig(**CLIP_OPTIONS.take(given), **ENCODER.take(given))
        summary = run_extract(ExtractConfig(**given, clip=clip))
    except (ValueError, ExtractError) as exc:
        fail(exc)
    raise typer.Exit(print_summary(summary))


@app.command("download", cls=STRICT)
@options(DownloadConfig, flags={"progress": PROGRESS})
def download_cmd(given: dict) -> None:
    """Fetch a manifest's media (yt-dlp or URLs), cut windows, write them with a new manifest; exit 1 when a row
    is unaccounted for or no file exists."""
    from pipeline.contract.provenance import producer
    from pipeline.download.run import DownloadError, download

    try:
        cfg = DownloadConfig(**given)
        counts = download(cfg, producer())
    except (ValueError, OSError, DownloadError) as exc:
        fail(exc)
    typer.echo(f"download: {counts.files} files, {sum(counts.errors.values())} errors "
               f"{dict(sorted(counts.errors.items()))} of {counts.rows} rows; {counts.fetched_now} sources fetched "
               f"now → {cfg.out}")
    raise typer.Exit(counts.exit_code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
