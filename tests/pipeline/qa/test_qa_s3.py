"""build-qa and import-vtimellm reading and writing s3:// on the local S3 server: the same shards as on disk."""
from __future__ import annotations

from pathlib import Path

from support.qa import shard_hashes, video_meta, write_feature_shards
from typer.testing import CliRunner

from infra import storage
from pipeline.cli import app
from pipeline.contract.shards import iter_samples, read_errors


def _metas() -> list[dict]:
    events = [{"start": 1.0, "end": 4.0, "caption": "a thing"}, {"start": 5.0, "end": 9.0, "caption": "another"}]
    return [video_meta(f"v{i}", 12.0, events, caption="a video") for i in range(5)]


def test_build_qa_on_s3_matches_local(s3, tmp_path):
    write_feature_shards(tmp_path / "feat", _metas())
    write_feature_shards(f"{s3}/feat", _metas())
    for out, feats in ((str(tmp_path / "qa"), str(tmp_path / "feat")), (f"{s3}/qa", f"{s3}/feat")):
        res = CliRunner().invoke(app, ["build-qa", "--stage", "2", "--features", feats, "--out", out,
                                       "--no-progress", "--samples-per-shard", "2"])
        assert res.exit_code == 0, (res.output, res.exception)
    assert shard_hashes(f"{s3}/qa") == shard_hashes(tmp_path / "qa"), "byte-identical shards"
    assert [s.conversation for s in iter_samples(f"{s3}/qa")] == [s.conversation for s in iter_samples(tmp_path / "qa")]
    res = CliRunner().invoke(app, ["inspect", f"{s3}/qa", "--verify"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["build-qa", "--stage", "2", "--features", f"{s3}/feat", "--out", f"{s3}/qa"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert not Path("s3:").exists()


def test_import_vtimellm_from_s3(s3, tmp_path):
    import json

    import numpy as np

    records = [{"id": f"v{i}", "conversations": [{"from": "human", "value": "<video>\nWhat happens?"},
                                                  {"from": "gpt", "value": "Something."}]} for i in range(3)]
    storage.write_bytes_atomic(f"{s3}/vt/stage3.json", json.dumps(records).encode())
    for i in range(2):  # v2 has no features
        with storage.open(f"{s3}/vt/feat/v{i}.npy", "wb") as f:
            np.save(f, np.ones((100, 768), np.float16) * i)
    res = CliRunner().invoke(app, ["import-vtimellm", "--json", f"{s3}/vt/stage3.json", "--features-dir",
                                   f"{s3}/vt/feat", "--out", f"{s3}/vt/out", "--stage", "3", "--no-progress"])
    assert res.exit_code == 0, (res.output, res.exception)
    samples = {s.key: s for s in iter_samples(f"{s3}/vt/out")}
    assert set(samples) == {"v0", "v1"} and float(samples["v1"].features[0, 0]) == 1.0
    assert [(e.key, e.reason) for e in read_errors(f"{s3}/vt/out")] == [("v2", "missing_features")]
