"""`vtl-pipeline`: manifest, extract, build-qa, import-vtimellm, inspect, synth.

Thin by design: each command parses its options into the frozen config of its module, calls one function and prints
where the outputs went. Options default to None ("not set"): the config dataclass holds every default
(infra.usage). Heavy libraries (torch, ray, decord, open_clip) are imported inside the called functions, so
`vtl-pipeline --help` stays instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from infra.usage import fail, given, strict_command_class

app = typer.Typer(help="vtl data pipeline: manifests → CLIP feature shards → training shards.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
STRICT = strict_command_class()
"""Every command refuses an option given twice (the last would silently win)."""


@app.command("inspect", cls=STRICT)
def inspect_cmd(
    shard_dir: str = typer.Argument(..., help="Folder with index.json and the shards (extract or build-qa output); "
                                    "a path or an s3:// / gs:// URL."),
    show: Optional[int] = typer.Option(None, "--show", help="Render this many samples: meta, events timeline, "
                                       "conversation (default 0)."),
    keys: Optional[list[str]] = typer.Option(None, "--key", help="Render the sample with this key (repeatable)."),
    verify: Optional[bool] = typer.Option(None, "--verify", help="Check every shard against the index (sha256, "
                                          "counts, unique keys, shapes, dtype, NaN/Inf); exit 1 on any mismatch."),
    scan: Optional[int] = typer.Option(None, "--scan", help="Samples streamed for the statistics (0 = all; "
                                       "--verify: all; default 1000)."),
    as_json: Optional[bool] = typer.Option(None, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a shard folder; render samples; verify shards against the index."""
    from pipeline.inspect.summary import InspectConfig, run

    try:
        cfg = InspectConfig(**given(shard_dir=shard_dir, show=show, keys=tuple(keys) if keys else None,
                                    verify=verify, scan=scan, as_json=as_json))
        code = run(cfg)
    except (ValueError, OSError) as e:  # a damaged folder (pipeline.contract.checked) or an unreadable file
        fail(e)
    raise typer.Exit(code)


def _parse_options(items: list[str] | None) -> dict | None:
    """`-o name=value` pairs; values are read as JSON where they parse (numbers, true/false), else as text."""
    import json

    if not items:
        return None
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
def manifest(
    dataset: str = typer.Option(..., help="activitynet | charades | didemo | internvid | lcc | vtimellm | files"),
    annotations: str = typer.Option(..., help="annotation file (for files: a folder, a media file or a JSONL); "
                                    "files may be s3:// or gs:// URLs"),
    out: str = typer.Option(..., help="manifest to write (.parquet); rejections go beside it (.errors.jsonl)"),
    durations: Optional[str] = typer.Option(None, help="CSV with id and length/duration (Charades needs it)"),
    media_root: Optional[str] = typer.Option(None, help="folder with the media; rows missing there are rejected"),
    options: Optional[list[str]] = typer.Option(None, "--option", "-o", help="reader option name=value "
                                                "(e.g. max_window_s=120)"),
) -> None:
    """Read a dataset's annotations into a Parquet manifest; print kept / flagged / rejected counts."""
    from rich.console import Console

    from manifests.build import ManifestConfig, build_manifest
    from manifests.report import summary_table
    from pipeline.contract.provenance import producer
    from pipeline.staging import staged_manifest

    try:
        with staged_manifest(annotations, out, durations, media_root) as staged:
            cfg = ManifestConfig(**given(dataset=dataset, annotations=staged.annotations, out=staged.out,
                                         durations=staged.durations, media_root=staged.media_root,
                                         options=_parse_options(options)))
            result, path, errors = build_manifest(cfg, producer(), staged.origin)
            path, errors = staged.commit(path, errors)
    except (ValueError, OSError, TypeError) as exc:  # OSError: an unreadable input or unwritable --out
        fail(exc)
    Console().print(summary_table(dataset, result, path, errors))


_TOKENIZER = typer.Option(None, "--tokenizer", help="HF tokenizer folder: count each sample's positions as the "
                          "trainer encodes it (skipped without).")
_CONV_FORMAT = typer.Option(None, "--conv-format", help="Format the budget counts with: plain, v1, chatglm3 or "
                            "chat_template (default: plain for stage 1, v1 otherwise).")
_MAX_TOKENS = typer.Option(None, "--max-tokens", help="Token budget per sample, text + feature rows (default 2048).")
_PER_SHARD = typer.Option(None, "--samples-per-shard", help="Samples per shard (default 1000).")
_OVERWRITE = typer.Option(None, "--overwrite", help="Replace a previous run's files in --out.")
_PROGRESS = typer.Option(None, "--progress/--no-progress", help="Show a progress bar (default on).")


@app.command("build-qa", cls=STRICT)
def build_qa_cmd(
    features: str = typer.Option(..., "--features", help="Feature-shard folder written by extract (path or URL)."),
    out: str = typer.Option(..., "--out", help="Output folder (empty, or --overwrite); path or s3:// / gs:// URL."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Training shards: 1 (captions, plain), 2 (templated "
                                        "boundary QA) or 3 (dialogues)."),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="Evaluation shards instead: grounding or dvc "
                                            "queries with their ground truth."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Stage 2: seed of the per-sample random stream "
                                       "(seed:key; default 0)."),
    dense_ratio: Optional[float] = typer.Option(None, "--dense-ratio", help="Stage 2: share of single-turn dense "
                                                "captioning (default 0.2)."),
    grounding_ratio: Optional[float] = typer.Option(None, "--grounding-ratio", help="Stage 2 multi-turn: "
                                                    "probability of a grounding turn per event (default 0.5)."),
    overlap: Optional[str] = typer.Option(None, "--overlap", help="Stage 2: keep (default; counted) or drop "
                                          "overlapping events."),
    dialogues: Optional[Path] = typer.Option(None, "--dialogues", help="Stage 3: VTimeLLM stage3.json-format file."),
    max_tokens: Optional[int] = _MAX_TOKENS,
    tokenizer: Optional[Path] = _TOKENIZER,
    conv_format: Optional[str] = _CONV_FORMAT,
    samples_per_shard: Optional[int] = _PER_SHARD,
    overwrite: Optional[bool] = _OVERWRITE,
    progress: Optional[bool] = _PROGRESS,
    generate: Optional[bool] = typer.Option(None, "--generate", help="Stage 3: write dialogues with a text LLM from "
                                            "each sample's events instead of --dialogues (docs/build-qa.md)."),
    llm: Optional[Path] = typer.Option(None, "--llm", help="--generate: local Hugging Face causal-LM folder."),
    dialogues_per_video: Optional[int] = typer.Option(None, "--dialogues-per-video", help="--generate: dialogues "
                                                      "per video (default 2)."),
    llm_engine: Optional[str] = typer.Option(None, "--llm-engine", help="--generate: transformers (default) or "
                                             "vllm (where installed)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="--generate: local (default; in-process) or ray "
                                           "(LLM actors)."),
    llm_actors: Optional[int] = typer.Option(None, "--llm-actors", help="--executor ray: LLM actors, one GPU each "
                                             "when there are GPUs (default 1)."),
    llm_batch_size: Optional[int] = typer.Option(None, "--llm-batch-size", help="--generate: prompts per generate "
                                                 "call (default 8)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="--generate: longest generation "
                                                 "(default 384)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="--generate: sampling temperature, 0 = "
                                                "greedy (default 0.7)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="--generate: nucleus sampling (default 0.9)."),
    on_duration_mismatch: Optional[str] = typer.Option(None, "--on-duration-mismatch", help="Samples whose "
                                                       "annotated duration the media does not have: skip (default; "
                                                       "error records), flag (kept, counted) or refuse."),
    timestamp_shift: Optional[int] = typer.Option(None, "--timestamp-shift", hidden=True,
                                                  help="Test-only: shift every rendered timestamp by N positions."),
    task: Optional[str] = typer.Option(None, "--task", hidden=True, help="Renamed: --benchmark."),
) -> None:
    """Feature shards → training shards with conversation.json (--stage 1|2|3) or evaluation queries (--benchmark)."""
    from pipeline.qa.build import BuildQaConfig, run_build_qa, summarize

    if task is not None:
        fail(f"--task is now --benchmark: use --benchmark {task}")
    try:
        cfg = BuildQaConfig(**given(
            features=features, out=out, stage=stage, benchmark=benchmark, seed=seed, dense_ratio=dense_ratio,
            grounding_ratio=grounding_ratio, overlap=overlap, dialogues=dialogues, max_tokens=max_tokens,
            tokenizer=tokenizer, conv_format=conv_format, samples_per_shard=samples_per_shard, overwrite=overwrite,
            progress=progress, timestamp_shift=timestamp_shift, on_duration_mismatch=on_duration_mismatch,
            generate=generate, llm=llm,
            dialogues_per_video=dialogues_per_video, llm_engine=llm_engine, executor=executor, llm_actors=llm_actors,
            llm_batch_size=llm_batch_size, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p))
        result = run_build_qa(cfg)
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    summarize(result)
    _report(result)


@app.command("import-vtimellm", cls=STRICT)
def import_vtimellm_cmd(
    json: str = typer.Option(..., "--json", help="VTimeLLM stage2.json/stage3.json or LLaVA's 558K json."),
    features_dir: str = typer.Option(..., "--features-dir", help="Folder of {id}.npy feature files."),
    out: str = typer.Option(..., "--out", help="Output folder (empty, or --overwrite). Each may be an s3:// URL."),
    stage: Optional[int] = typer.Option(None, "--stage", help="1, 2 or 3 (default: inferred from the records)."),
    max_tokens: Optional[int] = _MAX_TOKENS,
    tokenizer: Optional[Path] = _TOKENIZER,
    conv_format: Optional[str] = _CONV_FORMAT,
    samples_per_shard: Optional[int] = _PER_SHARD,
    overwrite: Optional[bool] = _OVERWRITE,
    progress: Optional[bool] = _PROGRESS,
) -> None:
    """VTimeLLM's released JSON + {id}.npy features → training shards (missing features become error records)."""
    from pipeline.qa.import_vtimellm import ImportConfig, run_import, summarize

    try:
        cfg = ImportConfig(**given(json=json, features_dir=features_dir, out=out, stage=stage, max_tokens=max_tokens,
                                   tokenizer=tokenizer, conv_format=conv_format, samples_per_shard=samples_per_shard,
                                   overwrite=overwrite, progress=progress))
        result = run_import(cfg)
    except (ValueError, OSError) as exc:  # OSError: a read-only or full output folder, an unreadable input
        fail(exc)
    summarize(result)
    _report(result)


def _report(result) -> None:
    """build-qa's and import-vtimellm's summary; exit 1 when no sample was written (nothing was produced)."""
    typer.echo(f"wrote {result.samples} samples ({result.errors} errors) to {result.out}")
    if result.samples == 0:
        fail(f"no sample written: every input became an error record (see {result.out}/errors.jsonl)", code=1)


def _event_range(text: str | None) -> tuple[int, int] | None:
    """`--events` "3" → (3, 3), "1-2" → (1, 2); anything else is a usage error."""
    if text is None:
        return None
    least, _, most = text.partition("-")
    try:
        return int(least), int(most or least)
    except ValueError:
        fail(f"--events must be N or LEAST-MOST, got {text!r}")


@app.command("synth", cls=STRICT)
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder: videos/, images/, annotations/, synth_info.json."),
    videos: Optional[int] = typer.Option(None, "--videos", help="Number of videos, train + test (default 64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of everything drawn; same seed, same dataset."),
    images: Optional[int] = typer.Option(None, "--images", help="Stage-1 images (one event each), LLaVA caption "
                                         "format (default 256)."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", help="Share of videos held out, split by "
                                                  "video (default 0.25)."),
    min_duration: Optional[float] = typer.Option(None, "--min-duration", help="Shortest video, s (default 4)."),
    max_duration: Optional[float] = typer.Option(None, "--max-duration", help="Longest video, s (default 40)."),
    fps: Optional[list[float]] = typer.Option(None, "--fps", help="Frame rates to draw from (repeatable; "
                                              "default 10, 15, 24, 30)."),
    size: Optional[int] = typer.Option(None, "--size", help="Frame width and height, pixels, even (default 64)."),
    dialogues_per_video: Optional[int] = typer.Option(None, "--dialogues-per-video", help="Stage-3 dialogues per "
                                                      "train video (default 2)."),
    gap_scale: Optional[float] = typer.Option(None, "--gap-scale", help="Weight of the gaps between events (larger: "
                                              "events shorter relative to the video; default 1)."),
    events: Optional[str] = typer.Option(None, "--events", help="Events per video: N, or LEAST-MOST drawn uniformly "
                                         "[default: 2-4, 2 in videos shorter than 8 s]."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Write into a non-empty folder."),
) -> None:
    """Generate a synthetic grounding dataset (videos with known event spans) in ActivityNet/LLaVA/VTimeLLM formats."""
    from pipeline.synth.dataset import SynthConfig, generate

    try:
        cfg = SynthConfig(**given(out=out, videos=videos, seed=seed, images=images, test_fraction=test_fraction,
                                  min_duration=min_duration, max_duration=max_duration,
                                  fps=tuple(fps) if fps else None, size=size,
                                  dialogues_per_video=dialogues_per_video, gap_scale=gap_scale,
                                  events=_event_range(events), overwrite=overwrite))
    except ValueError as e:
        fail(e)
    info = generate(cfg)
    c = info["counts"]
    typer.echo(f"{c['videos']} videos ({c['train']} train, {c['test']} test, {c['events']} events, "
               f"{c['frames']} frames), {c['images']} images, {c['dialogues']} stage-3 dialogues → {out}")
    for name, rel in info["files"].items():
        typer.echo(f"  {name:15s} {out / rel}")


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


@app.command("extract", cls=STRICT)
def extract_cmd(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name: manifest and output under "
                                          "--data-root/NAME/ (manifest.parquet, features/)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="Manifest (.parquet); overrides --dataset's. "
                                           "Paths and --out/--data-root may be s3:// or gs:// URLs."),
    out: Optional[str] = typer.Option(None, "--out", help="Shard folder; overrides --dataset's."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Root of the per-dataset folders "
                                             "(default ./data)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (auto | HOST:PORT | "
                                          "ray://host:port; token auth: docs/cluster.md); default: start Ray on "
                                          "this machine."),
    executor: Optional[str] = typer.Option(None, "--executor", help="ray (default), or local (in-process, for "
                                           "debugging)."),
    tasks: Optional[int] = typer.Option(None, "--tasks", help="Fixed number of manifest slices (default: from "
                                        "the row count). A rerun must use the same."),
    samples_per_shard: Optional[int] = _PER_SHARD,
    encoders: Optional[int] = typer.Option(None, "--encoders", help="CLIP encoder actors, one GPU each (default: 1 "
                                           "with GPUs; 0 without: every decode task encodes its own rows)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Frames per encoder forward pass "
                                             "(default 256)."),
    decode_threads: Optional[int] = typer.Option(None, "--decode-threads", help="Decoder threads per decode task "
                                                 "(default 1)."),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="ViT-L-14 (default), or tiny-random (tests, "
                                             "CPU demo)."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="ViT-L-14.pt (OpenAI, as VTimeLLM "
                                                "ships it) or an open_clip checkpoint."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip hub tag, e.g. openai."),
    fast_resize: Optional[bool] = typer.Option(None, "--fast-resize", help="Resize in the decoder (faster; not the "
                                               "VTimeLLM-compatible default, see docs/extract.md for its cosine)."),
    device: Optional[str] = typer.Option(None, "--device", help="Encoder device: auto (default), cpu or cuda."),
    progress: Optional[bool] = _PROGRESS,
) -> None:
    """Decode videos, sample 100 frames per sample and write CLIP features to shards (resumable Ray job)."""
    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.job import ExtractConfig, ExtractError, run_extract
    from pipeline.extract.report import print_summary

    try:
        clip = ClipConfig(**given(model=clip_model, weights=_text(clip_weights), pretrained=clip_pretrained,
                                  fast_resize=fast_resize, device=device))
        cfg = ExtractConfig(**given(dataset=dataset, manifest=_text(manifest), out=_text(out),
                                    data_root=_text(data_root), executor=executor, address=address, tasks=tasks,
                                    samples_per_shard=samples_per_shard, encoders=encoders, batch_size=batch_size,
                                    decode_threads=decode_threads, num_cpus=num_cpus, progress=progress),
                            clip=clip)
        summary = run_extract(cfg)
    except (ValueError, ExtractError) as exc:
        fail(exc)
    raise typer.Exit(print_summary(summary))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
