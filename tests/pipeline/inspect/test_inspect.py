"""`vtl-pipeline inspect`: summary, rendered samples, and `--verify` on clean and broken shard folders.

Every broken folder is built with pipeline.contract.shards.ShardWriter and then damaged the way real folders get damaged.
"""
import io
import json
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from manifests.schema import file_sha256
from pipeline.cli import app
from pipeline.contract.shards import ERRORS, ErrorRecord, Sample, ShardInfo, ShardWriter, append_errors, write_index
from pipeline.contract.timing import frame_indices, frame_times

N, D = 8, 16
runner = CliRunner()


def video_sample(i: int, conversation: dict | None = None, rows: int = N, dtype=np.float16) -> Sample:
    fps, num_frames, duration = 10.0, 200 + i, (200 + i) / 10.0
    idx = frame_indices(num_frames, fps, n=rows)
    meta = {"key": f"v{i:03d}", "dataset": "synth", "source_id": f"v{i:03d}", "media": f"videos/v{i:03d}.mp4",
            "kind": "video", "window": None, "duration": duration, "fps": fps, "num_frames": num_frames,
            "frame_indices": idx, "frame_times": frame_times(idx, fps),
            "events": [{"start": 0.0, "end": 3.4, "caption": "a red square appears"},
                       {"start": 9.4, "end": duration, "caption": "the background turns blue"}],
            "caption": None, "encoder": "tiny-random", "decoder": "pyav"}
    feats = np.random.default_rng(i).standard_normal((rows, D)).astype(dtype)
    return Sample(meta["key"], feats, meta, conversation)


def image_sample(i: int) -> Sample:
    meta = {"key": f"img{i:03d}", "dataset": "synth_images", "source_id": str(i), "media": f"images/{i}.png",
            "kind": "image", "window": None, "duration": None, "fps": None, "num_frames": 1, "frame_indices": [0],
            "frame_times": [0.0], "events": [], "caption": "a red square", "encoder": "tiny-random"}
    conv = {"turns": [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "a red square"}],
            "stage": 1, "form": "caption", "templates": [], "seed": None, "source": "build-qa"}
    return Sample(meta["key"], np.ones((1, D), np.float16), meta, conv)


def conversation(i: int) -> dict:
    return {"turns": [{"from": "human", "value": "<video>\nDuring which frames can we see a red square appears?"},
                      {"from": "gpt", "value": "From 00 to 17."},
                      {"from": "human", "value": "What happens from 47 to 99?"},
                      {"from": "gpt", "value": "The background turns blue."}],
            "stage": 2, "form": "multi_turn", "templates": ["T1", f"E{1 + i % 3}"], "seed": 7, "source": "build-qa"}


def write_folder(out, samples, per_shard: int = 3, prefix: str = "part", errors=()) -> list:
    with ShardWriter(out, prefix, samples_per_shard=per_shard) as writer:
        for s in samples:
            writer.write(s)
    if errors:
        append_errors(out / ERRORS, errors)
    write_index(out, writer.shards, encoder="tiny-random", num_frames=N, dim=D, manifest_hash="m0",
                errors=len(errors))
    return writer.shards


@pytest.fixture
def clean(tmp_path):
    samples = [video_sample(i, conversation(i)) for i in range(7)] + [image_sample(0)]
    errs = [ErrorRecord("bad1", "decode", "unreadable_video", "moov atom not found"),
            ErrorRecord("bad2", "decode", "unreadable_video"), ErrorRecord("bad3", "sample", "window_outside_video")]
    write_folder(tmp_path, samples, errors=errs)
    return tmp_path


def invoke(*args):
    return runner.invoke(app, ["inspect", *map(str, args)], env={"COLUMNS": "160"})


def verify_json(folder) -> tuple[int, dict]:
    res = invoke(folder, "--verify", "--json")
    return res.exit_code, json.loads(res.output)


def test_summary_counts(clean):
    res = invoke(clean, "--json", "--scan", "0")
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["totals"]["samples"] == 8 and s["shards"] == 3 and s["encoder"] == "tiny-random"
    assert s["producer"]["name"] == "vtl"
    sc = s["scanned"]
    assert sc["complete"] and sc["samples"] == 8
    assert sc["datasets"] == {"synth": 7, "synth_images": 1}
    assert sc["shapes"] == {f"{N}×{D}": 7, f"1×{D}": 1} and sc["dtypes"] == {"float16": 8}
    assert sc["frames"] == {"1": 1, str(N): 7}
    assert sc["stages"] == {"2": 7, "1": 1} and sc["forms"] == {"multi_turn": 7, "caption": 1}
    assert sc["templates"]["T1"] == 7 and sc["templates"]["E1"] == 3
    assert s["errors_by_reason"] == {"decode/unreadable_video": 2, "sample/window_outside_video": 1}


def test_summary_tables_and_partial_scan(clean):
    res = invoke(clean, "--scan", "2")
    assert res.exit_code == 0, res.output
    for text in ("tiny-random", "synth", "decode/unreadable_video", "QA stages", "multi_turn", "first ones"):
        assert text in res.output


def test_show_renders_meta_timeline_and_conversation(clean):
    res = invoke(clean, "--show", "1", "--key", "img000")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "v000" in out and "img000" in out and "v001" not in out
    assert "a red square appears" in out and "the background turns blue" in out
    # 0–3.4 s of 20 s → 00-17; 9.4–20 s → 47-99 (clamped)
    assert "00-17" in out and "47-99" in out and "█" in out
    assert "USER: <video>" in out and "ASSISTANT: From 00 to 17." in out
    assert "stage 1" in out and "a red square" in out


def test_show_reports_unknown_keys(clean):
    res = invoke(clean, "--key", "nope")
    assert "not found" in res.output and "nope" in res.output


def test_clean_folder_passes_verify(clean):
    code, s = verify_json(clean)
    assert code == 0 and s["verify"]["ok"] and s["verify"]["problems"] == []
    res = invoke(clean, "--verify")
    assert res.exit_code == 0 and "verify: OK" in res.output and "3 shards, 8 samples" in res.output


def _codes(s: dict) -> set[tuple]:
    return {(p["code"], p["shard"], p["key"]) for p in s["verify"]["problems"]}


def test_flipped_byte_is_named(clean):
    path = clean / "part-000001.tar"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    code, s = verify_json(clean)
    assert code == 1
    assert ("sha256_mismatch", "part-000001.tar", None) in _codes(s)
    res = invoke(clean, "--verify")
    assert res.exit_code == 1 and "sha256_mismatch" in res.output and "part-000001.tar" in res.output


def test_missing_shard_is_named(clean):
    (clean / "part-000002.tar").unlink()
    code, s = verify_json(clean)
    assert code == 1 and _codes(s) == {("missing_shard", "part-000002.tar", None)}


def test_extra_shard_is_named(clean):
    write_folder(clean / "other", [video_sample(50)], prefix="stray")
    (clean / "other" / "stray-000000.tar").rename(clean / "stray-000000.tar")
    code, s = verify_json(clean)
    assert code == 1 and _codes(s) == {("extra_shard", "stray-000000.tar", None)}


def test_duplicate_key_across_shards_is_named(tmp_path):
    with ShardWriter(tmp_path, "a", samples_per_shard=10) as w1:
        for i in range(3):
            w1.write(video_sample(i))
    with ShardWriter(tmp_path, "b", samples_per_shard=10) as w2:
        for i in (3, 1):
            w2.write(video_sample(i))
    write_index(tmp_path, w1.shards + w2.shards, encoder="tiny-random", num_frames=N, dim=D, manifest_hash=None)
    code, s = verify_json(tmp_path)
    assert code == 1
    assert _codes(s) == {("duplicate_key", "b-000000.tar", "v001")}
    assert "a-000000.tar" in s["verify"]["problems"][0]["detail"]


def test_nan_feature_is_named(tmp_path):
    bad = video_sample(2)
    bad.features[3, 5] = np.nan
    write_folder(tmp_path, [video_sample(0), video_sample(1), bad, video_sample(3)])
    code, s = verify_json(tmp_path)
    assert code == 1 and _codes(s) == {("non_finite", "part-000000.tar", "v002")}


def test_wrong_shape_and_conversation_are_named(tmp_path):
    short = video_sample(0, rows=N - 1)
    broken_conv = video_sample(1, conversation={"turns": [{"from": "gpt", "value": "no video token"}]})
    write_folder(tmp_path, [short, broken_conv, video_sample(3)])
    code, s = verify_json(tmp_path)
    assert code == 1
    assert {(c, k) for c, _, k in _codes(s)} == {("feature_shape", "v000"), ("conversation_invalid", "v001")}


def _raw_shard(path, members: list[tuple[str, bytes]]) -> ShardInfo:
    """A shard written member by member, for damage the writer refuses to produce (it casts to float16)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ShardInfo(path.name, len({n.split(".")[0] for n, _ in members}), path.stat().st_size, file_sha256(path))


def test_float32_features_and_unparsable_json_are_named(tmp_path):
    good = video_sample(0)
    buf = io.BytesIO()
    np.save(buf, good.features.astype(np.float32), allow_pickle=False)
    meta = json.dumps({**good.meta, "key": "f32"}).encode()
    info = _raw_shard(tmp_path / "raw-000000.tar", [("f32.features.npy", buf.getvalue()), ("f32.meta.json", meta),
                                                    ("badjson.features.npy", buf.getvalue()),
                                                    ("badjson.meta.json", b"{not json")])
    write_index(tmp_path, [info], encoder="tiny-random", num_frames=N, dim=D, manifest_hash=None)
    code, s = verify_json(tmp_path)
    assert code == 1
    codes = {(c, k) for c, _, k in _codes(s)}
    assert ("feature_dtype", "f32") in codes and ("unparsable_member", "badjson") in codes


def test_count_and_error_totals_mismatch(clean):
    index = json.loads((clean / "index.json").read_text())
    index["shards"][0]["samples"] += 1
    index["totals"]["samples"] += 1
    index["totals"]["errors"] = 5
    (clean / "index.json").write_text(json.dumps(index))
    code, s = verify_json(clean)
    assert code == 1
    assert _codes(s) == {("count_mismatch", "part-000000.tar", None), ("errors_count_mismatch", None, None)}


def test_not_a_shard_folder(tmp_path):
    res = invoke(tmp_path)
    assert res.exit_code == 2 and "index.json" in res.output


def test_shards_built_before_the_glossary_rename_still_verify(tmp_path):
    """Old records say "task" for the form, "stage": "eval" + "task" for the benchmark: still valid, still counted."""
    old_training = {**conversation(0), "task": "multi_turn"}
    del old_training["form"]
    old_eval = {"stage": "eval", "task": "grounding", "turns": [],
                "queries": [{"id": "v001_q0", "query": "During which frames can we see a red square appears?",
                             "sentence": "a red square appears", "span": [0.0, 3.4]}]}
    write_folder(tmp_path, [video_sample(0, old_training), video_sample(1, old_eval)])
    code, s = verify_json(tmp_path)
    assert code == 0 and s["verify"]["problems"] == [], s["verify"]
    sc = s["scanned"]
    assert sc["stages"] == {"2": 1} and sc["forms"] == {"multi_turn": 1} and sc["benchmarks"] == {"grounding": 1}
