"""Provenance before any work (issue 32, finding 13): `--resume` on shards that are not the run's, and `--from` a
checkpoint of another encoder or feature width, are one line and exit 2 before a model is built."""
from __future__ import annotations

import json
import time

import pytest
from support.training import write_training_shards
from test_reliability import args_for, cfg_for, invoke, one_line_error

from pipeline.contract.provenance import RUN_CONFIG
from train.preflight import shards_digest


def test_the_digest_names_the_shards_bytes_encoder_and_width(tmp_path):
    index = json.loads((write_training_shards(tmp_path / "a", n=8) / "index.json").read_text())
    assert shards_digest(index) == shards_digest(json.loads(json.dumps(index)))
    other = json.loads((write_training_shards(tmp_path / "b", n=8, seed=1) / "index.json").read_text())
    assert shards_digest(other) != shards_digest(index)  # same names and counts, other bytes
    for change in ({"encoder": "open_clip:other"}, {"dim": 512}, {"manifest_hash": "x"}):
        assert shards_digest({**index, **change}) != shards_digest(index)


@pytest.mark.slow  # one two-step training run (~30 s at load 4)
def test_resume_on_other_shards_and_from_another_width_are_one_line(tmp_path):
    from train.loop import run

    shards = write_training_shards(tmp_path / "shards", n=16, per_shard=8, rows=1)
    cfg = cfg_for(shards, tmp_path / "run", save_every=1)
    out = run(cfg)
    saved = json.loads((out / RUN_CONFIG).read_text())["shards"]
    assert saved["digest"] == shards_digest(json.loads((shards / "index.json").read_text()))

    write_training_shards(shards, n=16, per_shard=8, rows=1, seed=1)  # same folder, same names, other samples
    start = time.monotonic()
    text = one_line_error(invoke(*args_for(cfg), "--resume"))
    assert "are not those the run" in text and "digest" in text and time.monotonic() - start < 20

    stage2 = write_training_shards(tmp_path / "stage2", n=16, stage=2, per_shard=8, rows=1)
    index = json.loads((stage2 / "index.json").read_text())
    base = ["--stage", "2", "--from", str(out), "--llm", "tiny-random", "--no-progress", "--max-steps", "1",
            "--out", str(tmp_path / "s2")]
    (stage2 / "index.json").write_text(json.dumps({**index, "dim": 512}))
    text = one_line_error(invoke("--shards", str(stage2), *base))
    assert "takes 768-d features" in text and "hold 512-d ones" in text
    (stage2 / "index.json").write_text(json.dumps({**index, "encoder": "open_clip:other"}))
    text = one_line_error(invoke("--shards", str(stage2), *base))
    assert "'random'" in text and "'open_clip:other'" in text
    assert not (tmp_path / "s2").exists()  # refused before anything was written
