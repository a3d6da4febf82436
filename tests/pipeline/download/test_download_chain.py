"""download → extract → build-qa from a files JSONL of URLs served on 127.0.0.1: the whole chain, accounted."""
from __future__ import annotations

import json

import pytest
from download_helpers import media_server
from support.extract import config
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.contract.shards import read_index
from pipeline.extract.job import run_extract
from pipeline.qa.build import BuildQaConfig, run_build_qa
from pipeline.synth.media import frame_counter_video

runner = CliRunner()


@pytest.mark.slow
def test_manifest_download_extract_build_qa(tmp_path):
    videos = {"a": frame_counter_video(tmp_path / "src/a.mp4", 80, 10.0),
              "b": frame_counter_video(tmp_path / "src/b.mp4", 60, 10.0)}
    with media_server(videos) as srv:
        lines = [{"url": f"{srv.url}/v/a.mp4", "key": "a_w1", "window": [1.0, 5.0],
                  "events": [[0.5, 2.0, "a square turns grey."], [2.0, 3.5, "it fades."]]},
                 {"url": f"{srv.url}/v/a.mp4", "key": "a_w2", "window": [4.0, 7.5],
                  "events": [[0.0, 3.0, "the screen brightens."]]},
                 {"url": f"{srv.url}/page/b", "key": "b", "kind": "video", "events": [[1.0, 4.0, "a bar grows."]]},
                 {"url": f"{srv.url}/v/gone.mp4", "key": "gone", "events": [[0.0, 1.0, "nothing."]]}]
        ann = tmp_path / "urls.jsonl"
        ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
        res = runner.invoke(app, ["manifest", "--dataset", "files", "--annotations", str(ann),
                                  "--out", str(tmp_path / "in.parquet")])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["download", "--manifest", str(tmp_path / "in.parquet"), "--out",
                                  str(tmp_path / "dl"), "--margin", "0.5"])
        assert res.exit_code == 0 and "3 files, 1 errors" in res.output, res.output
        assert srv.hits["/v/a.mp4"] == 1
    errors = [json.loads(ln) for ln in (tmp_path / "dl/errors.jsonl").read_text().splitlines()]
    assert [(e["key"], e["reason"]) for e in errors] == [("gone", "http_404")]
    run_extract(config(tmp_path / "dl/manifest.parquet", tmp_path / "feat", executor="local", tasks=1))
    index = read_index(tmp_path / "feat")
    assert (index["totals"]["samples"], index["totals"]["errors"]) == (3, 0)
    result = run_build_qa(BuildQaConfig(features=tmp_path / "feat", out=tmp_path / "qa", stage="2"))
    assert read_index(tmp_path / "qa")["totals"]["samples"] == 3, result
