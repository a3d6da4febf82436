"""`vtl-pipeline`: manifest, extract, build-qa, import-vtimellm, inspect, synth.

Thin by design: each command parses its options into the frozen config of its module, calls one function and prints
where the outputs went. Heavy libraries (torch, ray, decord, open_clip) are imported inside the called functions, so
`vtl-pipeline --help` stays instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="vtl data pipeline: manifests → CLIP feature shards → training shards.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def fail(message: str, code: int = 2) -> None:
    """Stop with a clear one-line message (a wrong option, an unusable input) instead of a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command("inspect")
def inspect_cmd(
    shard_dir: str = typer.Argument(..., help="Folder with index.json and the shards (extract or build-qa output); "
                                    "a path or an s3:// / gs:// URL."),
    show: int = typer.Option(0, "--show", help="Render this many samples: meta, events timeline, conversation."),
    key: Optional[list[str]] = typer.Option(None, "--key", help="Render the sample with this key (repeatable)."),
    verify: bool = typer.Option(False, "--verify", help="Check every shard against the index (sha256, counts, "
                                "unique keys, shapes, dtype, NaN/Inf); exit 1 on any mismatch."),
    scan: int = typer.Option(1000, "--scan", help="Samples streamed for the statistics (0 = all; --verify: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a shard folder; render samples; verify shards against the index."""
    from pipeline.inspect.summary import InspectConfig, run

    try:
        cfg = InspectConfig(shard_dir=shard_dir, show=show, keys=tuple(key or ()), verify=verify, scan=scan,
                            as_json=as_json)
        code = run(cfg)
    except (ValueError, FileNotFoundError) as e:
        fail(str(e))
    raise typer.Exit(code)


def _parse_options(items: list[str]) -> dict:
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


@app.command()
def manifest(
    dataset: str = typer.Option(..., help="activitynet | charades | didemo | internvid | lcc | vtimellm | files"),
    annotations: str = typer.Option(..., help="annotation file (for files: a folder, a media file or a JSONL); "
                                    "files may be s3:// or gs:// URLs"),
    out: str = typer.Option(..., help="manifest to write (.parquet); rejections go beside it (.errors.jsonl)"),
    durations: Optional[str] = typer.Option(None, help="CSV with id and length/duration (Charades needs it)"),
    media_root: Optional[str] = typer.Option(None, help="folder with the media; rows missing there are rejected"),
    option: list[str] = typer.Option([], "--option", "-o", help="reader option name=value (e.g. max_window_s=120)"),
) -> None:
    """Read a dataset's annotations into a Parquet manifest; print kept / flagged / rejected counts."""
    from rich.console import Console

    from manifests.build import ManifestConfig, build_manifest
    from manifests.report import summary_table
    from pipeline.contract.provenance import producer
    from pipeline.contract.staging import staged_manifest

    try:
        with staged_manifest(annotations, out, durations, media_root) as staged:
            cfg = ManifestConfig(dataset=dataset, annotations=staged.annotations, out=staged.out,
                                 durations=staged.durations, media_root=staged.media_root,
                                 options=_parse_options(option))
            result, path, errors = build_manifest(cfg, producer(), staged.origin)
            path, errors = staged.commit(path, errors)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        fail(str(exc))
    Console().print(summary_table(dataset, result, path, errors))


@app.command("build-qa")
def build_qa_cmd(
    stage: str = typer.Option(..., "--stage", help="1 (captions, plain), 2 (templated boundary QA), 3 (dialogues) "
                              "or eval (grounding/dvc queries)."),
    features: str = typer.Option(..., "--features", help="Feature-shard folder written by extract (path or URL)."),
    out: str = typer.Option(..., "--out", help="Output folder (empty, or --overwrite); path or s3:// / gs:// URL."),
    seed: int = typer.Option(0, "--seed", help="Stage 2: seed of the per-sample random stream (seed:key)."),
    dense_ratio: float = typer.Option(0.2, "--dense-ratio", help="Stage 2: share of single-turn dense captioning."),
    grounding_ratio: float = typer.Option(0.5, "--grounding-ratio",
                                          help="Stage 2 multi-turn: probability of a grounding turn per event."),
    overlap: str = typer.Option("keep", "--overlap", help="Stage 2: keep (and count) or drop overlapping events."),
    dialogues: Optional[Path] = typer.Option(None, "--dialogues", help="Stage 3: VTimeLLM stage3.json-format file."),
    task: Optional[str] = typer.Option(None, "--task", help="Eval: grounding or dvc."),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="Token budget per sample (text + feature rows)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="HF tokenizer folder for the budget check."),
    conv_format: Optional[str] = typer.Option(None, "--conv-format", help="Budget layout: plain or v1."),
    samples_per_shard: int = typer.Option(1000, "--samples-per-shard"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous run's files in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    timestamp_shift: int = typer.Option(0, "--timestamp-shift", hidden=True,
                                        help="Test-only: shift every rendered timestamp by N positions."),
) -> None:
    """Feature shards → training shards with conversation.json (stages 1-3) or evaluation queries."""
    from pipeline.qa.build import BuildQaConfig, run_build_qa, summarize

    try:
        cfg = BuildQaConfig(stage=stage, features=features, out=out, seed=seed, dense_ratio=dense_ratio,
                            grounding_ratio=grounding_ratio, overlap=overlap, dialogues=dialogues, task=task,
                            max_tokens=max_tokens, tokenizer=tokenizer, conv_format=conv_format,
                            samples_per_shard=samples_per_shard, overwrite=overwrite, progress=progress,
                            timestamp_shift=timestamp_shift)
        result = run_build_qa(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
    summarize(result)
    typer.echo(f"wrote {result.samples} samples ({result.errors} errors) to {result.out}")


@app.command("import-vtimellm")
def import_vtimellm_cmd(
    json_path: str = typer.Option(..., "--json", help="VTimeLLM stage2.json/stage3.json or LLaVA's 558K json."),
    features_dir: str = typer.Option(..., "--features-dir", help="Folder of {id}.npy feature files."),
    out: str = typer.Option(..., "--out", help="Output folder (empty, or --overwrite). Each may be an s3:// URL."),
    stage: Optional[int] = typer.Option(None, "--stage", help="1, 2 or 3 (default: inferred from the records)."),
    max_tokens: int = typer.Option(2048, "--max-tokens", help="Token budget per sample (text + feature rows)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="HF tokenizer folder for the budget check."),
    conv_format: Optional[str] = typer.Option(None, "--conv-format", help="Budget layout: plain or v1."),
    samples_per_shard: int = typer.Option(1000, "--samples-per-shard"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous run's files in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """VTimeLLM's released JSON + {id}.npy features → training shards (missing features become error records)."""
    from pipeline.qa.import_vtimellm import ImportConfig, run_import, summarize

    try:
        cfg = ImportConfig(json=json_path, features_dir=features_dir, out=out, stage=stage, max_tokens=max_tokens,
                           tokenizer=tokenizer, conv_format=conv_format, samples_per_shard=samples_per_shard,
                           overwrite=overwrite, progress=progress)
        result = run_import(cfg)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        fail(str(exc))
    summarize(result)
    typer.echo(f"wrote {result.samples} samples ({result.errors} errors) to {result.out}")


def _event_range(text: str | None) -> tuple[int, int] | None:
    """`--events` "3" → (3, 3), "1-2" → (1, 2); anything else is a usage error."""
    if text is None:
        return None
    least, _, most = text.partition("-")
    try:
        return int(least), int(most or least)
    except ValueError:
        fail(f"--events must be N or LEAST-MOST, got {text!r}")


@app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder: videos/, images/, annotations/, synth_info.json."),
    videos: int = typer.Option(64, "--videos", help="Number of videos (train + test)."),
    seed: int = typer.Option(0, "--seed", help="Seed of everything drawn; same seed, same dataset."),
    images: int = typer.Option(256, "--images", help="Stage-1 images (one event each), LLaVA caption format."),
    test_fraction: float = typer.Option(0.25, "--test-fraction", help="Share of videos held out (split by video)."),
    min_duration: float = typer.Option(4.0, "--min-duration", help="Shortest video, seconds."),
    max_duration: float = typer.Option(40.0, "--max-duration", help="Longest video, seconds."),
    fps: Optional[list[float]] = typer.Option(None, "--fps", help="Frame rates to draw from (repeatable; "
                                              "default 10, 15, 24, 30)."),
    size: int = typer.Option(64, "--size", help="Frame width and height, pixels (even)."),
    dialogues: int = typer.Option(2, "--dialogues-per-video", help="Stage-3 dialogues per train video."),
    gap_scale: float = typer.Option(1.0, "--gap-scale", help="Weight of the gaps between events (larger: events "
                                    "shorter relative to the video)."),
    events: str = typer.Option(None, "--events", help="Events per video: N, or LEAST-MOST drawn uniformly "
                               "[default: 2-4, 2 in videos shorter than 8 s]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder."),
) -> None:
    """Generate a synthetic grounding dataset (videos with known event spans) in ActivityNet/LLaVA/VTimeLLM formats."""
    from pipeline.synth.dataset import SynthConfig, generate

    try:
        cfg = SynthConfig(out=out, videos=videos, seed=seed, images=images, test_fraction=test_fraction,
                          min_duration=min_duration, max_duration=max_duration, size=size,
                          dialogues_per_video=dialogues, gap_scale=gap_scale, overwrite=overwrite,
                          events=_event_range(events),
                          **({"fps": tuple(fps)} if fps else {}))
    except ValueError as e:
        fail(str(e))
    info = generate(cfg)
    c = info["counts"]
    typer.echo(f"{c['videos']} videos ({c['train']} train, {c['test']} test, {c['events']} events, "
               f"{c['frames']} frames), {c['images']} images, {c['dialogues']} stage-3 dialogues → {out}")
    for name, rel in info["files"].items():
        typer.echo(f"  {name:15s} {out / rel}")


@app.command("extract")
def extract_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name: manifest and output under "
                                          "--data-root/NAME/ (manifest.parquet, features/)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Manifest (.parquet); overrides --dataset's. "
                                           "Paths and --out/--data-root may be s3:// or gs:// URLs."),
    out: Optional[str] = typer.Option(None, "--out", help="Shard folder; overrides --dataset's."),
    data_root: str = typer.Option("./data", "--data-root", help="Root of the per-dataset folders."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (auto | ray://host:port); "
                                          "default: start Ray on this machine."),
    executor: str = typer.Option("ray", "--executor", help="ray, or local (in-process, for debugging)."),
    tasks: Optional[int] = typer.Option(None, "--tasks", help="Fixed number of manifest slices (default: from "
                                        "the row count). A rerun must use the same."),
    samples_per_shard: int = typer.Option(1000, "--samples-per-shard"),
    encoders: int = typer.Option(1, "--encoders", help="CLIP encoder actors (one GPU each when GPUs exist)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Frames per encoder forward pass."),
    decode_threads: int = typer.Option(1, "--decode-threads", help="Decoder threads per decode task."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
    clip_model: str = typer.Option("ViT-L-14", "--clip-model", help="ViT-L-14, or tiny-random (tests, CPU demo)."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="ViT-L-14.pt (OpenAI, as VTimeLLM "
                                                "ships it) or an open_clip checkpoint."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip hub tag, e.g. openai."),
    fast_resize: bool = typer.Option(False, "--fast-resize", help="Resize in the decoder (faster; not the "
                                     "VTimeLLM-compatible default, see docs/extract.md for its cosine)."),
    device: str = typer.Option("auto", "--device", help="Encoder device: auto, cpu or cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Decode videos, sample 100 frames per sample and write CLIP features to shards (resumable Ray job)."""
    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.job import ExtractConfig, ExtractError, print_summary, run_extract

    try:
        clip = ClipConfig(model=clip_model, weights=str(clip_weights) if clip_weights else None,
                          pretrained=clip_pretrained, fast_resize=fast_resize, device=device)
        cfg = ExtractConfig(dataset=dataset, manifest=manifest, out=out, data_root=data_root, executor=executor,
                            address=address, tasks=tasks, samples_per_shard=samples_per_shard, encoders=encoders,
                            batch_size=batch_size, decode_threads=decode_threads, num_cpus=num_cpus,
                            progress=progress, clip=clip)
        summary = run_extract(cfg)
    except (ValueError, ExtractError) as exc:
        fail(str(exc))
    raise typer.Exit(print_summary(summary))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
