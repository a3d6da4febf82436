"""The download run: the folder it owns, resume, the worker that turns one source into its rows' files.

    DIR/media/{key}.mp4     one file per row (a cut window, a re-encode, or the source as fetched)
    DIR/rows/{key}.json     the row's marker: its new manifest row, or its error record
    DIR/plan.json           the settings the folder was started with (a rerun must match them)
    DIR/manifest.parquet    written last, from the markers: the rows that have a file, in input order
    DIR/errors.jsonl        the rows that failed, in input order, each with a reason

Resumable per row (STYLE.md 3): a media file is committed whole (temporary name then rename, or one PUT), then its
marker. A rerun skips rows with a marker, and writes the marker of a row whose file is there without fetching it
again (a kill between the two), so nothing finished is downloaded twice. Rows sharing a source are fetched once.
The sources are fetched by threads here (`fetch_groups`) or, with `--executor ray`, by the same function inside Ray
tasks that each own a fixed slice of them (pipeline/download/ray_run.py): both write the same files and markers, so
a folder started by one can be finished by the other. `--retry-failed` removes the markers of transient failures
before the rows are planned, so they are fetched like rows never tried.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from infra import storage
from infra.preflight import preflight
from manifests.schema import ManifestRow, ReadResult, file_sha256, read_manifest, write_manifest
from pipeline.download.config import DownloadConfig
from pipeline.download.cut import probe, write_clip
from pipeline.download.fetch import YTDLP_MISSING, HostSlots, fetch
from pipeline.download.sources import CUT_FAILED, FetchError, Source, is_transient, media_suffix, source_of
from pipeline.download.spool import clean_spool, commit, spool_folder

PLAN_FIELDS = ("manifest_sha256", "margin", "height", "fps", "url_template")
MEDIA, ROWS = "media", "rows"


class DownloadError(RuntimeError):
    """A wrong option, an unreadable manifest, a folder started with other settings (CLI exit code 2)."""


@dataclass(frozen=True)
class Counts:
    rows: int
    files: int
    errors: Counter
    fetched_now: int

    @property
    def exit_code(self) -> int:
        """0 when every row is a file or an error record and at least one file exists; else 1."""
        complete = self.files + sum(self.errors.values()) == self.rows
        return 0 if complete and self.files > 0 else 1


def out_row(row: ManifestRow, media: str, cfg: DownloadConfig, video_duration: float | None) -> ManifestRow:
    """The row as the new manifest holds it: media → the written file; a cut window → the window inside the file."""
    if row.window is None or row.kind != "video":
        known = row.duration if row.duration is not None or row.kind != "video" else video_duration
        known = None if known is not None and math.isnan(known) else known
        return replace(row, media=media, duration=known)
    start, end = row.window
    lead = min(cfg.margin, start)
    if cfg.margin == 0:
        return replace(row, media=media, window=None, duration=row.duration or end - start)
    return replace(row, media=media, window=(lead, lead + end - start), duration=row.duration or end - start)


def cut_needed(row: ManifestRow, cfg: DownloadConfig) -> bool:
    return row.kind == "video" and (row.window is not None or cfg.reencode)


class RunFolder:
    """Where each row's file and marker go, and what earlier runs left."""

    def __init__(self, cfg: DownloadConfig):
        self.cfg, self.out = cfg, storage.resolve(cfg.out)

    def media(self, row: ManifestRow, source: Source) -> str:
        ext = ".mp4" if cut_needed(row, self.cfg) else media_suffix(source, row.kind)
        return storage.join(self.out, MEDIA, f"{row.key}{ext}")

    def marker(self, key: str) -> str:
        return storage.join(self.out, ROWS, f"{key}.json")

    def start(self, plan: dict) -> None:
        path = storage.join(self.out, "plan.json")
        if storage.exists(path):
            old = storage.read_json(path)
            for name in PLAN_FIELDS:
                if old.get(name) != plan.get(name):
                    raise DownloadError(f"{self.out} was started with a different {name}: {old.get(name)!r} "
                                        f"there, {plan.get(name)!r} now; rerun with the same settings or a new --out")
        else:
            storage.write_json_atomic(path, plan)

    def done(self) -> tuple[set[str], set[str]]:
        """(keys with a marker, names in media/): one listing each; temporary files of a killed run are removed."""
        found = []
        for sub in (ROWS, MEDIA):
            names = storage.listdir(storage.join(self.out, sub))
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    storage.remove(storage.join(self.out, sub, name))
            found.append({n for n in names if not n.endswith(".tmp")})
        return {n.removesuffix(".json") for n in found[0]}, found[1]

    def write_ok(self, row: ManifestRow) -> dict:
        rec = {"row": row.to_json()}
        storage.write_json_atomic(self.marker(row.key), rec)
        return rec

    def write_error(self, row: ManifestRow, source: Source, reason: str, detail: str) -> dict:
        rec = {"error": {"key": row.key, "source_id": row.source_id, "url": source.url, "reason": reason,
                         "detail": detail}}
        storage.write_json_atomic(self.marker(row.key), rec)
        return rec


def produce(folder: RunFolder, row: ManifestRow, source: Source, local: str, info, tmp: str) -> dict:
    """One row's file from the fetched source (a clip is cut inside `tmp`), committed, then its marker."""
    cfg, target = folder.cfg, folder.media(row, source)
    if not cut_needed(row, cfg):
        commit(local, target)
        return folder.write_ok(out_row(row, target, cfg, info.duration if info else None))
    start, end = row.window if row.window is not None else (0.0, float("inf"))
    a, b = max(0.0, start - cfg.margin), end + cfg.margin
    clip = os.path.join(tmp, f"clip-{row.key}.mp4")
    try:
        if write_clip(local, clip, a, b, info, cfg.height, cfg.fps) == 0:
            raise FetchError(CUT_FAILED, f"no frame in [{a:.3f}, {b:.3f}) s (video is {info.duration:.3f} s)")
        commit(clip, target)
    finally:
        if os.path.exists(clip):
            os.remove(clip)
    return folder.write_ok(out_row(row, target, cfg, info.duration))


def do_source(folder: RunFolder, source: Source, rows: list[ManifestRow], slots: HostSlots) -> dict[str, dict]:
    """Fetch one source once; write every row that uses it; a failure is an error record for each of its rows."""
    import av

    tmp = spool_folder("src")
    results = {}
    try:
        try:
            local = fetch(source, tmp, folder.cfg, slots)
            info = probe(local) if any(r.kind == "video" for r in rows) else None
        except FetchError as exc:
            return {r.key: folder.write_error(r, source, exc.reason, exc.detail) for r in rows}
        for row in rows:
            try:
                results[row.key] = produce(folder, row, source, local, info, tmp)
            except FetchError as exc:
                results[row.key] = folder.write_error(row, source, exc.reason, exc.detail)
            except av.error.FFmpegError as exc:
                results[row.key] = folder.write_error(row, source, CUT_FAILED, f"{type(exc).__name__}: {exc}")
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_input(cfg: DownloadConfig) -> tuple[list[ManifestRow], str]:
    preflight(storage.resolve(cfg.manifest), what="--manifest")
    tmp = spool_folder("in")
    try:
        local = storage.fetch(storage.resolve(cfg.manifest), tmp)
        return read_manifest(local), file_sha256(local)
    except (OSError, ValueError) as exc:
        raise DownloadError(f"--manifest {cfg.manifest}: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plan_sources(rows: list[ManifestRow], cfg: DownloadConfig) -> dict[ManifestRow, Source]:
    try:
        sources = {row: source_of(row.media, cfg.url_template) for row in rows}
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    if any(s.via == "ytdlp" for s in sources.values()):
        try:
            import yt_dlp  # noqa: F401
        except ImportError:
            raise DownloadError(YTDLP_MISSING) from None
    return sources


def fetch_groups(folder: RunFolder, groups: list[tuple[Source, list[ManifestRow]]], progress: bool) -> dict:
    """Every source with `--concurrency` threads, at most `--per-host` per host at once; each row's marker record."""
    slots, results = HostSlots(folder.cfg.per_host), {}
    with ThreadPoolExecutor(folder.cfg.concurrency) as pool:
        futures = [pool.submit(do_source, folder, s, g, slots) for s, g in groups]
        for n, fut in enumerate(futures, 1):
            results.update(fut.result())
            if progress:
                print(f"download: {n}/{len(futures)} sources", file=sys.stderr)
    return results


def forget_transient(folder: RunFolder, marked: set[str]) -> dict[str, dict]:
    """`--retry-failed`: remove the markers of rows that failed for a transient reason (they are fetched again);
    the other markers read, by key."""
    kept = {}
    for key in sorted(marked):
        rec = storage.read_json(folder.marker(key))
        if "error" in rec and is_transient(rec["error"]["reason"]):
            storage.remove(folder.marker(key))
        else:
            kept[key] = rec
    return kept


def download(cfg: DownloadConfig, provenance: dict) -> Counts:
    clean_spool()  # what a killed run on this machine left
    rows, sha = _read_input(cfg)
    sources = _plan_sources(rows, cfg)
    folder = RunFolder(cfg)
    preflight(folder.out, write=True, what="--out folder")
    folder.start({"manifest_sha256": sha, **{k: getattr(cfg, k) for k in PLAN_FIELDS[1:]}})
    marked, present = folder.done()
    known = forget_transient(folder, marked) if cfg.retry_failed else {}
    marked = set(known) if cfg.retry_failed else marked
    results: dict[str, dict] = {}
    groups: dict[Source, list[ManifestRow]] = {}
    for row in rows:
        if row.key in marked:
            continue
        if storage.basename(folder.media(row, sources[row])) in present:  # killed between file and marker
            results[row.key] = folder.write_ok(out_row(row, folder.media(row, sources[row]), cfg, None))
            continue
        groups.setdefault(sources[row], []).append(row)
    if cfg.executor == "ray":
        from infra.local_ray import ClusterJoinError
        from pipeline.download.ray_run import run_on_ray

        try:
            results.update(run_on_ray(fetch_groups, folder, groups, list(dict.fromkeys(sources[r] for r in rows))))
        except ClusterJoinError as exc:
            raise DownloadError(str(exc)) from None
    else:
        results.update(fetch_groups(folder, list(groups.items()), cfg.progress))
    for key in marked - set(results):
        results[key] = known.get(key) or storage.read_json(folder.marker(key))
    return _finish(folder, rows, results, provenance, fetched_now=len(groups))


def _finish(folder: RunFolder, rows: list[ManifestRow], results: dict[str, dict], provenance: dict,
            fetched_now: int) -> Counts:
    """Write manifest.parquet and errors.jsonl from the markers, in input order; return the counts."""
    kept = [ManifestRow.from_json(results[r.key]["row"]) for r in rows if "row" in results.get(r.key, {})]
    errors = [results[r.key]["error"] for r in rows if "error" in results.get(r.key, {})]
    tmp = spool_folder("out")
    try:
        stats = {"inputs": len(rows), "rows": len(kept), "errors": len(errors)}
        local = write_manifest(ReadResult(rows=kept, stats=stats), f"{tmp}/manifest.parquet",
                               {**provenance, "download": asdict(folder.cfg)})
        storage.write_bytes_atomic(storage.join(folder.out, "errors.jsonl"),
                                   "".join(json.dumps(e) + "\n" for e in errors).encode())
        commit(local, storage.join(folder.out, "manifest.parquet"))  # last: the run is complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Counts(len(rows), len(kept), Counter(e["reason"] for e in errors), fetched_now)
