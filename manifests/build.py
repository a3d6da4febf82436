"""`vtl-pipeline manifest`: its frozen config and the one function the command calls.

`build_manifest` streams one annotation source through `stream_dataset` into the Parquet manifest (row groups) and its
`.errors.jsonl`, and records provenance (dataset, annotation path + sha256, durations path + sha256, media root,
options, the producing package) in the Parquet metadata, so every manifest says how it was made.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from manifests.readers import KEPT, READERS, final_stats, reader_options, stream_dataset
from manifests.schema import errors_path, file_sha256
from manifests.writer import ManifestWriter


@dataclass(frozen=True)
class ManifestConfig:
    """One manifest run.

    dataset: a name in `manifests.READERS`.
    annotations: the annotation file (a folder or a media file for `files`).
    out: the Parquet file to write; rejections go to `<out without .parquet>.errors.jsonl`.
    durations: CSV with `id` and `length`/`duration` (Charades needs it; DiDeMo and files may use it).
    media_root: folder holding the media; when given, rows whose media is not there are rejected.
    options: reader options (InternVid selection thresholds), name → value.
    """

    dataset: str
    annotations: Path
    out: Path
    durations: Path | None = None
    media_root: Path | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in READERS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(READERS)}")
        if not Path(self.annotations).exists():
            raise FileNotFoundError(f"annotations not found: {self.annotations}")
        if self.durations is not None and not Path(self.durations).is_file():
            raise FileNotFoundError(f"durations CSV not found: {self.durations}")
        if self.media_root is not None and not Path(self.media_root).is_dir():
            raise FileNotFoundError(f"media root is not a folder: {self.media_root}")
        if Path(self.out).suffix != ".parquet":
            raise ValueError(f"--out must end in .parquet, got {self.out}")
        unknown = set(self.options) - set(reader_options(self.dataset))
        if unknown:
            raise ValueError(f"{self.dataset} takes no option {sorted(unknown)}; "
                             f"it takes {sorted(reader_options(self.dataset)) or 'none'}")


def _digest(path: Path | None) -> str | None:
    """sha256 of a file; a folder (the `files` reader) is hashed over its sorted relative paths and sizes."""
    if path is None:
        return None
    if Path(path).is_file():
        return file_sha256(path)
    import hashlib

    h = hashlib.sha256()
    for p in sorted(q for q in Path(path).rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def provenance(cfg: ManifestConfig, producer: dict, origin: dict | None = None) -> dict:
    """`origin` names where an input was copied from (field → URL) when the command read a local copy of it."""
    origin = origin or {}

    def where(name: str) -> str:
        return origin.get(name) or str(Path(getattr(cfg, name)).resolve())

    return {
        "dataset": cfg.dataset,
        "annotations": {"path": where("annotations"), "sha256": _digest(cfg.annotations)},
        "durations": None if cfg.durations is None else {"path": where("durations"),
                                                         "sha256": _digest(cfg.durations)},
        "media_root": None if cfg.media_root is None else str(Path(cfg.media_root).resolve()),
        "options": dict(cfg.options),
        "config": {k: origin.get(k) or (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "producer": producer,
    }


@dataclass
class ManifestSummary:
    """What `vtl-pipeline manifest` reports of a written manifest (the rows themselves are in the file)."""

    rows: int
    events: int
    flags: dict
    rejections: dict
    stats: dict


def build_manifest(cfg: ManifestConfig, producer: dict, origin: dict | None = None
                   ) -> tuple[ManifestSummary, Path, Path]:
    """Read and write the manifest and its errors file row group by row group (memory does not grow with the
    annotation file); returns the summary and both paths."""
    stats: dict = {}
    items = stream_dataset(cfg.dataset, cfg.annotations, durations=cfg.durations, media_root=cfg.media_root,
                           stats=stats, **cfg.options)
    writer = ManifestWriter(cfg.out)
    try:
        for stage, item in items:
            writer.reject(item, stage) if stage != KEPT else writer.add(item)
        out = writer.close(provenance(cfg, producer, origin),
                           lambda w: final_stats(stats, w.rows, w.flags, w.reasons))
    except BaseException:
        writer.abort()
        raise
    summary = ManifestSummary(writer.rows, writer.events, dict(sorted(writer.flags.items())),
                              dict(sorted(writer.reasons.items())), final_stats(stats, writer.rows, writer.flags,
                                                                                 writer.reasons))
    return summary, out, errors_path(out)
