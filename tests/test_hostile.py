"""Hostile inputs through every reader and CLI of ours that takes files from outside (docs/reliability.md).

Each case builds a small shard folder with our own writer (or an annotation / `.npy` folder), damages it the way
real files get damaged or forged, and runs the commands in-process (typer's CliRunner). For every case: the command
terminates within its timeout; bad input gives exit ≠ 0 with one `error:` line and no traceback, or a counted error
record with the rest processed (in = out + errors); nothing is written outside `--out`; no `.tmp` is left behind.
"""
from __future__ import annotations

import errno
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support.qa import video_meta, write_feature_shards
from typer.testing import CliRunner

from eval.cli import app as eval_app
from pipeline.cli import app
from pipeline.contract.shards import INDEX, ShardInfo, read_errors, write_index

runner = CliRunner()
D = 16
pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- building and damaging folders

def _metas(n: int = 3, caption: str | None = "a person waves") -> list[dict]:
    return [video_meta(f"v{i}", 20.0, [{"start": 1.0, "end": 5.0, "caption": f"event {i}"},
                                        {"start": 6.0, "end": 12.0, "caption": f"then {i}"}], caption=caption)
            for i in range(n)]


def features_dir(root: Path, metas: list[dict] | None = None) -> Path:
    out = root / "feat"
    write_feature_shards(out, metas or _metas(), dim=D, samples_per_shard=2)
    return out


def _shard(folder: Path) -> Path:
    return folder / json.loads((folder / INDEX).read_text())["shards"][0]["name"]


def _reindex(folder: Path) -> None:
    """Keep index.json in step with a damaged shard's size, so the damage is met inside the tar, not by the size."""
    index = json.loads((folder / INDEX).read_text())
    for entry in index["shards"]:
        entry["bytes"] = (folder / entry["name"]).stat().st_size
    (folder / INDEX).write_text(json.dumps(index))


def _forged(folder: Path, members: dict[str, bytes], key: str = "v9") -> None:
    """Append a shard holding one sample with raw (forged) member bytes, listed in the index."""
    path = folder / "feat-000009.tar"
    with tarfile.open(path, "w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(f"{key}.{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = json.loads((folder / INDEX).read_text())
    shards = [ShardInfo(s["name"], s["samples"], s["bytes"], s["sha256"]) for s in index["shards"]]
    shards.append(ShardInfo(path.name, 1, path.stat().st_size, "forged"))
    write_index(folder, shards, encoder=index["encoder"], num_frames=100, dim=D, manifest_hash="test")


def _npy(shape=(100, D), dtype=np.float16) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype))
    return buf.getvalue()


def _huge_header_npy() -> bytes:
    """A valid `.npy` header claiming (10**6, 10**6) float16 (~2 TB), followed by 64 bytes."""
    good = _npy((4, 8))
    header = good[:good.index(b"}") + 1].replace(b"(4, 8)", b"(1000000, 1000000)")
    header += b" " * (127 - len(header)) + b"\n"
    return header + b"\0" * 64


def _meta_bytes(key: str = "v9", **change) -> bytes:
    return json.dumps({**video_meta(key, 20.0, [{"start": 1.0, "end": 5.0, "caption": "x"}], caption="c"),
                       **change}).encode()


def zero_filled(f: Path) -> None:
    p = _shard(f)
    p.write_bytes(b"\0" * p.stat().st_size)


def cut_at_header(f: Path) -> None:
    p = _shard(f)
    p.write_bytes(p.read_bytes()[:1024])


def gzipped(f: Path) -> None:
    p = _shard(f)
    p.write_bytes(gzip.compress(p.read_bytes()))
    _reindex(f)


def empty_shard(f: Path) -> None:
    _shard(f).write_bytes(b"")
    _reindex(f)


def fifo_shard(f: Path) -> None:
    p = _shard(f)
    p.unlink()
    os.mkfifo(p)


def index_not_json(f: Path) -> None:
    (f / INDEX).write_text('{"format_version": 1, "shards": [')


def index_a_list(f: Path) -> None:
    (f / INDEX).write_text("[1, 2]")


def index_entry_broken(f: Path) -> None:
    index = json.loads((f / INDEX).read_text())
    del index["shards"][0]["samples"]
    (f / INDEX).write_text(json.dumps(index))


def index_escapes(f: Path) -> None:
    index = json.loads((f / INDEX).read_text())
    index["shards"][0]["name"] = "../../etc/passwd.tar"
    (f / INDEX).write_text(json.dumps(index))


def errors_not_json(f: Path) -> None:
    (f / "errors.jsonl").write_text("{not json\n")


def huge_npy_header(f: Path) -> None:
    _forged(f, {"features.npy": _huge_header_npy(), "meta.json": _meta_bytes()})


def meta_not_json(f: Path) -> None:
    _forged(f, {"features.npy": _npy(), "meta.json": b"{\"key\": "})


def bad_key(f: Path) -> None:
    _forged(f, {"features.npy": _npy(), "meta.json": _meta_bytes("v 9")}, key="v 9")


def one_dim_features(f: Path) -> None:
    _forged(f, {"features.npy": _npy((D,)), "meta.json": _meta_bytes()})


# Damage → what is expected: "refuse" (exit ≠ 0, one error line) or "record" (the sample becomes an error record,
# the others are written). --verify reports every damage as problems (exit 1) except where it cannot be read at all.
FOLDER_CASES = {
    "zero_filled_shard": (zero_filled, "refuse"),
    "cut_at_header": (cut_at_header, "refuse"),
    "gzip_shard": (gzipped, "refuse"),
    "empty_shard": (empty_shard, "refuse"),
    "fifo_shard": (fifo_shard, "refuse"),
    "index_not_json": (index_not_json, "refuse"),
    "index_a_list": (index_a_list, "refuse"),
    "index_entry_broken": (index_entry_broken, "refuse"),
    "index_name_escapes": (index_escapes, "refuse"),
    "huge_npy_header": (huge_npy_header, "record"),
    "meta_not_json": (meta_not_json, "record"),
    "bad_key": (bad_key, "record"),
    "one_dim_features": (one_dim_features, "record"),
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_error_line(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output


@pytest.fixture
def damaged(tmp_path, request):
    damage, expect = FOLDER_CASES[request.param]
    folder = features_dir(tmp_path)
    damage(folder)
    return tmp_path, folder, expect


@pytest.mark.parametrize("damaged", sorted(FOLDER_CASES), indirect=True)
def test_inspect_summary_and_show(damaged):
    root, folder, expect = damaged
    before = _tree(root)
    for args in (["inspect", str(folder)], ["inspect", str(folder), "--show", "9"]):
        result = runner.invoke(app, args, env={"COLUMNS": "120"})
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        if expect == "refuse":
            assert result.exit_code != 0
            _one_error_line(result)
    assert _tree(root) == before


@pytest.mark.parametrize("damaged", sorted(FOLDER_CASES), indirect=True)
def test_inspect_verify(damaged):
    root, folder, expect = damaged
    before = _tree(root)
    result = runner.invoke(app, ["inspect", str(folder), "--verify"], env={"COLUMNS": "120"})
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _tree(root) == before


@pytest.mark.parametrize("damaged", sorted(FOLDER_CASES), indirect=True)
def test_build_qa(damaged):
    root, folder, expect = damaged
    out = root / "qa"
    before = _tree(root)
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(out), "--stage", "2",
                                 "--no-progress"], env={"COLUMNS": "120"})
    assert "Traceback" not in result.output, result.output
    assert not list(out.glob(".*tmp")) if out.exists() else True
    assert {p for p in _tree(root) - before if not p.startswith("qa")} == set()
    if expect == "refuse":
        assert result.exit_code != 0
        _one_error_line(result)
        return
    assert result.exit_code == 0, result.output
    index = json.loads((out / INDEX).read_text())
    errors = read_errors(out)
    assert index["totals"]["samples"] == 3 and len(errors) == 1  # 4 in = 3 written + 1 error record
    assert index["totals"]["samples"] + len(errors) == index["qa"]["inputs"]["feature_samples"]


# ---------------------------------------------------------------- text that must not reach the terminal or the trainer

def test_show_strips_escape_sequences_and_markup(tmp_path):
    metas = _metas(1, caption="\x1b[2J\x1b]0;owned\x07 [/bold] [link=file:///x]y")
    metas[0]["events"][0]["caption"] = "\x1b[31mred\x9b"
    folder = features_dir(tmp_path, metas)
    result = runner.invoke(app, ["inspect", str(folder), "--show", "1"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output
    assert "\\x1b[2J" in result.output and "[/bold]" in result.output


def test_video_token_in_caption_is_an_error_record(tmp_path):
    metas = _metas(3)
    metas[1]["caption"] = "look <video> here"
    folder = features_dir(tmp_path, metas)
    out = tmp_path / "qa"
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(out), "--stage", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [(e.key, e.reason) for e in read_errors(out)] == [("v1", "bad_turns")]


def test_nothing_written_exits_nonzero_and_repeated_option_is_refused(tmp_path):
    folder = features_dir(tmp_path, _metas(2, caption=None))
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(tmp_path / "qa"), "--stage",
                                 "1", "--no-progress"])
    assert result.exit_code == 1 and "no sample written" in result.stderr
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--features", str(tmp_path), "--out",
                                 str(tmp_path / "qa2"), "--stage", "1"])
    assert result.exit_code == 2 and not (tmp_path / "qa2").exists()
    _one_error_line(result)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_full_or_read_only_output_folder(tmp_path, monkeypatch, code):
    import pipeline.qa.output as output

    class FailingWriter(output.ShardWriter):
        def write(self, sample):
            super().write(sample)  # the temporary shard exists now
            raise OSError(code, os.strerror(code), self._pending.local)

    monkeypatch.setattr(output, "ShardWriter", FailingWriter)
    folder = features_dir(tmp_path)
    out = tmp_path / "qa"
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(out), "--stage", "2",
                                 "--no-progress"])
    assert result.exit_code == 2 and os.strerror(code) in result.stderr
    _one_error_line(result)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- import-vtimellm

def test_import_vtimellm_hostile_features(tmp_path):
    feat = tmp_path / "npy"
    feat.mkdir()
    (tmp_path / "outside.npy").write_bytes(_npy((100, 768)))
    records = []
    for rid, data in (("ok", _npy((100, 768))), ("huge", _huge_header_npy()), ("narrow", _npy((100, 512))),
                      ("../outside", None)):
        if data is not None:
            (feat / f"{rid}.npy").write_bytes(data)
        records.append({"id": rid, "source": "test", "meta": {"duration": 20.0, "token": {"<s0>": 1.0, "<e0>": 5.0}},
                        "conversations": [{"from": "human", "value": "<video>\nWhen does it happen?"},
                                          {"from": "gpt", "value": "From <s0> to <e0>."}]})
    (tmp_path / "stage2.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    before = _tree(tmp_path)
    result = runner.invoke(app, ["import-vtimellm", "--json", str(tmp_path / "stage2.json"), "--features-dir",
                                 str(feat), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    reasons = {e.source_id: e.reason for e in read_errors(out)}
    assert reasons == {"huge": "unreadable_features", "narrow": "bad_dim", "../outside": "bad_id"}
    assert json.loads((out / INDEX).read_text())["totals"]["samples"] == 1  # 4 in = 1 + 3 errors
    assert {p for p in _tree(tmp_path) - before if not p.startswith("out")} == set()


def test_import_vtimellm_json_not_json(tmp_path):
    (tmp_path / "s.json").write_text("[{")
    (tmp_path / "npy").mkdir()
    result = runner.invoke(app, ["import-vtimellm", "--json", str(tmp_path / "s.json"), "--features-dir",
                                 str(tmp_path / "npy"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    _one_error_line(result)


# ---------------------------------------------------------------- manifest

def test_manifest_hostile_activitynet(tmp_path):
    ann = tmp_path / "anet.json"
    ann.write_text('{"v_a": {"duration": 10, "timestamps": [[0, 5], [5, 9]], "sentences": ["x", null]},'
                   ' "v_a": {"duration": 20, "timestamps": [[0, 5]], "sentences": ["y"]},'
                   ' "": {"duration": 10, "timestamps": [[0, 5]], "sentences": ["y"]},'
                   ' "v_n": {"duration": NaN, "timestamps": [[0, 5]], "sentences": ["y"]},'
                   ' "v_i": {"duration": Infinity, "timestamps": [[0, 5]], "sentences": ["y"]},'
                   ' "v_z": {"duration": -3, "timestamps": [[0, 5]], "sentences": ["y"]},'
                   ' "v_v": {"duration": 10, "timestamps": [[0, 5]], "sentences": ["a <video> b"]}}')
    out = tmp_path / "m.parquet"
    result = runner.invoke(app, ["manifest", "--dataset", "activitynet", "--annotations", str(ann), "--out",
                                 str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    from manifests.schema import errors_path, read_manifest

    rows = read_manifest(out)
    rejected = [json.loads(line) for line in errors_path(out).read_text().splitlines()]
    by_id = {r["source_id"]: r["reason"] for r in rejected}
    assert [(r.key, [e.caption for e in r.events], r.duration) for r in rows] == [("v_a", ["x"], 10.0)]
    assert by_id["v_a"] == "duplicate_id" and by_id["v_a#1"] == "no_caption" and by_id["<empty id>"] == "bad_id"
    assert by_id["v_n"] == by_id["v_i"] == by_id["v_z"] == "bad_duration" and by_id["v_v"] == "no_usable_events"
    videos = {r["source_id"] for r in rejected if "#" not in r["source_id"]}
    assert len(rows) + len(videos) == 7  # every video of the file: a row or a rejection


# ---------------------------------------------------------------- eval

@pytest.fixture
def eval_shards(tmp_path):
    folder = features_dir(tmp_path)
    out = tmp_path / "eval"
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(out), "--benchmark",
                                 "grounding", "--no-progress"])
    assert result.exit_code == 0, result.output
    (tmp_path / "ckpt").mkdir()
    return tmp_path, out


@pytest.mark.parametrize("case", ["zero_filled_shard", "cut_at_header", "gzip_shard", "empty_shard",
                                  "index_not_json", "index_entry_broken", "index_name_escapes"])
def test_eval_refuses_damaged_shards(eval_shards, case):
    root, shards = eval_shards
    FOLDER_CASES[case][0](shards)
    out = root / "eval-out"
    before = _tree(root)
    result = runner.invoke(eval_app, ["grounding", "--checkpoint", str(root / "ckpt"), "--shards", str(shards),
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    _one_error_line(result)
    assert _tree(root) == before  # refused before the model loads: nothing written, not even --out


@pytest.mark.parametrize("case", ["zero_filled_shard", "huge_npy_header", "meta_not_json"])
def test_eval_reader_counts_against_the_index(eval_shards, case):
    from eval.runner import read_eval_shards
    from pipeline.contract.checked import ShardError

    _, shards = eval_shards
    FOLDER_CASES[case][0](shards)
    if case == "zero_filled_shard":  # keep the size right, so the count check is what catches it
        _reindex(shards)
    with pytest.raises(ShardError, match="index.json says|unreadable"):
        read_eval_shards(shards, "grounding")


def test_score_accepts_vtimellm_log_and_names_the_expected_shapes(tmp_path):
    ann = tmp_path / "anet.json"
    ann.write_text(json.dumps({"v_a": {"duration": 10.0, "timestamps": [[0, 5], [5, 10]],
                                       "sentences": ["one thing.", "other thing."]}}))
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"video_id": "v_a", "task": "grounding", "query_id": i,
                                       "answer": "From 00 to 50.", "info": {"sentence_id": i}}) + "\n"
                           for i in range(2)))
    result = runner.invoke(eval_app, ["score", "--benchmark", "grounding", "--predictions", str(log),
                                      "--annotations", str(ann), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["R1@0.5"] == 50.0  # sentence_id 0 matched exactly, 1 missed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": 3}))
    result = runner.invoke(eval_app, ["score", "--benchmark", "grounding", "--predictions", str(bad),
                                      "--annotations", str(ann), "--out", str(tmp_path / "s2")])
    assert result.exit_code == 2 and "expected JSONL" in result.stderr
    _one_error_line(result)


# ---------------------------------------------------------------- small files and media

def test_json_files_hold_no_nan_and_leave_no_tmp(tmp_path):
    from infra.storage import write_json_atomic
    from pipeline.contract.shards import Sample, decode_sample, encode_sample

    path = write_json_atomic(tmp_path / "metrics.json", {"mIoU": float("nan"), "x": [float("inf"), 1.5]})
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c)) == {"mIoU": None, "x": [None, 1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    meta = {**video_meta("k", 20.0, []), "duration": float("nan")}
    members = encode_sample(Sample("k", np.zeros((100, D), np.float16), meta))
    assert b"NaN" not in members["meta.json"] and decode_sample(members).meta["duration"] is None


def test_16_bit_png_is_scaled_not_whitened(tmp_path):
    from PIL import Image

    from pipeline.extract.decode import read_image

    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(grey).save(tmp_path / "g16.png")
    frame = read_image(str(tmp_path / "g16.png"))[0]
    assert frame.shape == (64, 64, 3) and (frame == 255).mean() < 0.01
    np.testing.assert_array_equal(frame[..., 0], (grey >> 8).astype(np.uint8))


def test_extract_with_every_row_failed_exits_nonzero(tmp_path):
    from collections import Counter

    from rich.console import Console

    from pipeline.extract.report import ExtractSummary, print_summary

    console = Console(file=io.StringIO())
    failed = ExtractSummary(tmp_path, rows=3, samples=0, errors=Counter(missing_file=3), tasks_run=1,
                            tasks_skipped=0, seconds=1.0)
    assert print_summary(failed, console) == 1 and "no sample extracted" in console.file.getvalue()
    assert print_summary(ExtractSummary(tmp_path, 3, 2, Counter(missing_file=1), 1, 0, 1.0), console) == 0
    done, wide = ExtractSummary(tmp_path, 40, 40, Counter(), 2, 0, 30.0, startup_seconds=10.0), Console(
        file=io.StringIO(), width=200)
    assert print_summary(done, wide) == 0 and "(1.33 rows/s, 2.00 rows/s after 10.0 s of start-up)" in \
        wide.file.getvalue()


def test_stage3_malformed_dialogue_turns_are_error_records(tmp_path):
    folder = features_dir(tmp_path)
    good = {"id": "v0", "meta": {"duration": 20.0, "token": {"<s0>": 1.0, "<e0>": 5.0}},
            "conversations": [{"from": "human", "value": "<video>\nWhat happens?"},
                              {"from": "gpt", "value": "From <s0> to <e0>, a wave."}]}
    dialogues = [good, {**good, "id": "v1", "conversations": "not a list"},
                 {**good, "id": "v2", "conversations": [{"from": "gpt", "value": 3}]}]
    (tmp_path / "stage3.json").write_text(json.dumps(dialogues))
    out = tmp_path / "qa"
    result = runner.invoke(app, ["build-qa", "--features", str(folder), "--out", str(out), "--stage", "3",
                                 "--dialogues", str(tmp_path / "stage3.json"), "--no-progress"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    index, errors = json.loads((out / INDEX).read_text()), read_errors(out)
    assert index["totals"]["samples"] == 1 and {e.key for e in errors} >= {"v1", "v2"}


@pytest.mark.timeout(120)  # an extract with a model load: ~10 s idle, more on a loaded box
def test_absurd_shapes_are_error_records_before_the_resize(tmp_path):
    """A 93-byte 1×4000 PNG and a 1024×2 video (one 224 × 114688 float resize per frame: ~3 s each here, ~5 min
    for 100 frames) are `bad_shape` records; the other rows are extracted, on both resize paths, in seconds."""
    import time

    from PIL import Image
    from support.extract import assert_exact, config, write_rows

    from manifests.schema import ManifestRow
    from pipeline.extract.clip import ClipConfig
    from pipeline.extract.job import run_extract
    from pipeline.synth.media import frame_counter_video, write_video

    media = {"v60": frame_counter_video(tmp_path / "v60.mp4", 60, 10.0), "im": tmp_path / "im.png"}
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(media["im"])
    Image.fromarray(np.zeros((4000, 1, 3), np.uint8)).save(tmp_path / "tall.png", optimize=True)
    write_video(tmp_path / "wide.mp4", np.full((30, 2, 1024, 3), 128, np.uint8), 10.0)
    assert (tmp_path / "tall.png").stat().st_size < 200
    rows = [ManifestRow(key="ok_video", dataset="synth", kind="video", media=str(media["v60"])),
            ManifestRow(key="ok_image", dataset="synth", kind="image", media=str(media["im"])),
            ManifestRow(key="tall_png", dataset="synth", kind="image", media=str(tmp_path / "tall.png")),
            ManifestRow(key="wide_video", dataset="synth", kind="video", media=str(tmp_path / "wide.mp4"))]
    manifest = write_rows(rows, tmp_path / "m.parquet")
    for fast in (False, True):
        out = tmp_path / f"out-{fast}"
        t0 = time.monotonic()
        run_extract(config(manifest, out, executor="local", clip=ClipConfig(model="tiny-random", fast_resize=fast)))
        assert time.monotonic() - t0 < 20
        samples, errors = assert_exact(out, rows)
        assert sorted(samples) == ["ok_image", "ok_video"]
        by_key = {e.key: e for e in errors}
        assert {k: (e.step, e.reason) for k, e in by_key.items()} == {
            "tall_png": ("decode", "bad_shape"), "wide_video": ("sample_frames", "bad_shape")}
        assert "1x4000 pixels (aspect ratio 4000:1" in by_key["tall_png"].detail
        assert "1024x2 pixels (aspect ratio 512:1" in by_key["wide_video"].detail


def test_duration_mismatch_rule():
    """max(0.5 s, 5 % of the decoded length); the window's part inside the file is what was decoded."""
    from pipeline.contract.timing import decoded_span, duration_mismatch

    assert decoded_span(60, 10.0, None) == 6.0 and decoded_span(60, 10.0, (2.0, 10.0)) == 4.0
    assert decoded_span(60, 10.0, (1.5, 4.0)) == 2.5 and decoded_span(3, 30.0, (0.0, 5.0)) == pytest.approx(0.1)
    assert duration_mismatch(6.4, 6.0) is None and duration_mismatch(6.6, 6.0) == {"annotated": 6.6, "decoded": 6.0}
    assert duration_mismatch(104.9, 100.0) is None and duration_mismatch(105.1, 100.0) is not None
    assert duration_mismatch(148.0, 5.0) == {"annotated": 148.0, "decoded": 5.0}
    assert duration_mismatch(None, 5.0) is None and duration_mismatch(float("nan"), 5.0) is None


@pytest.fixture(scope="module")
def mismatched_features(tmp_path_factory):
    """Extracted features of: window (2, 10) on a 6 s file, an ActivityNet-style duration of 148 s on a 5 s file, a
    DiDeMo-style window (0, 5) on a 0.1 s file, and one consistent row."""
    from support.extract import config, write_rows

    from manifests.schema import Event, ManifestRow
    from pipeline.extract.job import run_extract
    from pipeline.synth.media import frame_counter_video

    d = tmp_path_factory.mktemp("mismatch")
    six, five, tiny = (frame_counter_video(d / f"{n}.mp4", frames, fps) for n, frames, fps in
                       (("six", 60, 10.0), ("five", 50, 10.0), ("tiny", 3, 30.0)))
    ev = (Event(1.0, 2.5, "the grey gets lighter"),)
    rows = [ManifestRow(key="window_past_end", dataset="synth", kind="video", media=str(six), window=(2.0, 10.0),
                        duration=8.0, events=ev),
            ManifestRow(key="duration_148", dataset="synth", kind="video", media=str(five), duration=148.0,
                        events=(Event(10.0, 40.0, "a long event"),)),
            ManifestRow(key="tiny_file", dataset="synth", kind="video", media=str(tiny), window=(0.0, 5.0),
                        duration=5.0, events=ev),
            ManifestRow(key="consistent", dataset="synth", kind="video", media=str(six), duration=6.0, events=ev)]
    out = d / "features"
    run_extract(config(write_rows(rows, d / "m.parquet"), out, executor="local", tasks=1))
    return out


@pytest.mark.timeout(120)  # an extract with a model load: ~10 s idle, more on a loaded box
def test_duration_mismatch_is_flagged_in_meta_and_reported(mismatched_features):
    from pipeline.contract.shards import iter_samples

    flags = {s.key: s.meta.get("duration_mismatch") for s in iter_samples(mismatched_features)}
    assert flags == {"window_past_end": {"annotated": 8.0, "decoded": 4.0},
                     "duration_148": {"annotated": 148.0, "decoded": 5.0},
                     "tiny_file": {"annotated": 5.0, "decoded": 0.1}, "consistent": None}
    summary = runner.invoke(app, ["inspect", str(mismatched_features)])
    assert summary.exit_code == 0 and "duration_mismatch: 3 sample(s)" in summary.output, summary.output
    verify = runner.invoke(app, ["inspect", str(mismatched_features), "--verify", "--json"])
    assert verify.exit_code == 0, verify.output
    report = json.loads(verify.output)
    assert report["scanned"]["duration_mismatch"] == 3 and report["verify"]["ok"]
    assert any(w.startswith("3 sample(s) flagged duration_mismatch") for w in report["verify"]["warnings"])


@pytest.mark.timeout(120)  # an extract with a model load: ~10 s idle, more on a loaded box
def test_build_qa_skips_flags_or_refuses_duration_mismatches(mismatched_features, tmp_path):
    from pipeline.contract.shards import iter_samples
    from pipeline.contract.timing import render_time

    base = ["build-qa", "--features", str(mismatched_features), "--stage", "2", "--no-progress"]
    skipped = runner.invoke(app, [*base, "--out", str(tmp_path / "skip")])  # the default
    assert skipped.exit_code == 0, skipped.output
    assert [s.key for s in iter_samples(tmp_path / "skip")] == ["consistent"]
    errors = read_errors(tmp_path / "skip")
    assert sorted((e.key, e.reason) for e in errors) == [("duration_148", "duration_mismatch"),
                                                         ("tiny_file", "duration_mismatch"),
                                                         ("window_past_end", "duration_mismatch")]
    assert "annotated 148.0 s, decoded 5.0 s" in {e.key: e.detail for e in errors}["duration_148"]

    flagged = runner.invoke(app, [*base, "--out", str(tmp_path / "flag"), "--on-duration-mismatch", "flag"])
    assert flagged.exit_code == 0, flagged.output
    samples = {s.key: s for s in iter_samples(tmp_path / "flag")}
    assert len(samples) == 4 and read_errors(tmp_path / "flag") == []
    index = json.loads((tmp_path / "flag" / INDEX).read_text())
    assert index["qa"]["notes"]["duration_mismatch_kept"] == 3
    long = samples["duration_148"]
    assert long.meta["duration_mismatch"] == {"annotated": 148.0, "decoded": 5.0}
    text = " ".join(t["value"] for t in long.conversation["turns"])
    # VTimeLLM's rule stays: timestamps quantised against the annotated duration (10 s, 40 s of 148 s → 07, 27)
    assert render_time(10.0, 148.0) == "07" and render_time(40.0, 148.0) == "27"
    assert "07" in text and "27" in text, text

    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "refuse"), "--on-duration-mismatch", "refuse"])
    assert refused.exit_code == 2
    _one_error_line(refused)
    assert "3 of 4 samples have an annotated duration" in refused.stderr and "duration_148 (annotated 148.0 s" in \
        refused.stderr
    assert not (tmp_path / "refuse").exists() or not any((tmp_path / "refuse").iterdir())
