"""The shard contract (pipeline.contract.shards): round trip, temporary name then rename, index, errors, and no pickle."""
import io
import json
import tarfile

import numpy as np
import pytest

from manifests.schema import file_sha256
from pipeline.contract.shards import (
    CONVERSATION,
    ERRORS,
    FEATURES,
    INDEX,
    META,
    ErrorRecord,
    Sample,
    ShardWriter,
    append_errors,
    decode_sample,
    encode_sample,
    iter_samples,
    iter_tar_members,
    read_errors,
    read_index,
    write_index,
)


def _sample(i: int, rows: int = 4, dim: int = 8, conversation: dict | None = None) -> Sample:
    rng = np.random.default_rng(i)
    meta = {"key": f"vid_{i:03d}", "dataset": "unit", "kind": "video", "duration": 10.0 + i,
            "events": [{"start": 1.0, "end": 2.5, "caption": "a red square appears"}]}
    return Sample(f"vid_{i:03d}", rng.standard_normal((rows, dim)).astype(np.float32), meta, conversation)


def test_round_trip_through_shards_and_index(tmp_path):
    conv = {"turns": [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "From 10 to 25."}],
            "stage": 2, "form": "multi_turn", "templates": ["T1"], "seed": 0, "source": "build-qa"}
    samples = [_sample(i, conversation=conv if i % 2 else None) for i in range(7)]
    with ShardWriter(tmp_path, "part", samples_per_shard=3) as writer:
        for s in samples:
            writer.write(s)
    assert [s.name for s in writer.shards] == ["part-000000.tar", "part-000001.tar", "part-000002.tar"]
    assert [s.samples for s in writer.shards] == [3, 3, 1]
    for info in writer.shards:
        path = tmp_path / info.name
        assert info.sha256 == file_sha256(path) and info.bytes == path.stat().st_size
    write_index(tmp_path, writer.shards, encoder="tiny", num_frames=4, dim=8, manifest_hash="abc", errors=0)
    index = read_index(tmp_path)
    assert index["totals"] == {"shards": 3, "samples": 7, "bytes": sum(s.bytes for s in writer.shards), "errors": 0}
    assert index["producer"]["name"] == "vtl" and index["num_frames"] == 4 and index["dim"] == 8

    back = list(iter_samples(tmp_path))
    assert [s.key for s in back] == [s.key for s in samples]
    for orig, got in zip(samples, back):
        assert got.features.dtype == np.float16 and got.features.shape == (4, 8)
        np.testing.assert_array_equal(got.features, orig.features.astype(np.float16))
        assert got.meta == orig.meta
        assert got.conversation == orig.conversation


def test_members_are_plain_npy_and_json(tmp_path):
    with ShardWriter(tmp_path, "p") as writer:
        writer.write(_sample(0, conversation={"turns": []}))
    with tarfile.open(tmp_path / writer.shards[0].name) as tar:
        names = tar.getnames()
        assert sorted(names) == sorted([f"vid_000.{FEATURES}", f"vid_000.{META}", f"vid_000.{CONVERSATION}"])
        raw = tar.extractfile(f"vid_000.{FEATURES}").read()
        assert raw[:6] == b"\x93NUMPY"
        json.loads(tar.extractfile(f"vid_000.{META}").read())


def test_writer_uses_a_temporary_name_until_the_shard_is_complete(tmp_path):
    writer = ShardWriter(tmp_path, "p", samples_per_shard=2)
    writer.write(_sample(0))
    assert [p.name for p in tmp_path.iterdir()] == [".p-000000.tar.tmp"]   # nothing under a final name yet
    writer.write(_sample(1))                                                # shard full: renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-000000.tar"]
    writer.write(_sample(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p-000001.tar.tmp", "p-000000.tar"]
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-000000.tar", "p-000001.tar"]


def test_a_failure_inside_the_writer_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "p", samples_per_shard=10) as writer:
            writer.write(_sample(0))
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_object_dtype_npy_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"payload": "not data"}], dtype=object), allow_pickle=True)
    members = {"__key__": "evil", FEATURES: buf.getvalue(), META: b"{}"}
    with pytest.raises(ValueError, match="allow_pickle"):
        decode_sample(members)


def test_object_dtype_npy_inside_a_shard_is_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        for name, data in ((f"k.{FEATURES}", buf.getvalue()), (f"k.{META}", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = list(iter_tar_members(tmp_path / "evil.tar"))
    assert members[0]["__key__"] == "k"
    with pytest.raises(ValueError):
        decode_sample(members[0])


def test_encode_validates_the_contract():
    with pytest.raises(ValueError, match="invalid sample key"):
        encode_sample(Sample("has.dot", np.zeros((1, 4)), {}))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        encode_sample(Sample("k", np.zeros(4), {}))
    with pytest.raises(ValueError, match="lacks"):
        decode_sample({"__key__": "k", META: b"{}"})


def test_read_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        read_index(tmp_path)
    (tmp_path / INDEX).write_text(json.dumps({"format_version": 999}))
    with pytest.raises(ValueError, match="format_version"):
        read_index(tmp_path)


def test_errors_round_trip(tmp_path):
    records = [ErrorRecord("a", "decode", "unreadable_video", "moov atom not found", "src_a"),
               ErrorRecord("b", "sample", "window_outside_video")]
    assert append_errors(tmp_path / ERRORS, records[:1]) == 1
    assert append_errors(tmp_path / ERRORS, records[1:]) == 1
    assert read_errors(tmp_path) == records
    assert read_errors(tmp_path / "elsewhere") == []
