"""The whole chain on s3:// against the local S3 server, through the real commands: manifest → extract → inspect →
build-qa (training and evaluation shards) → vtl-train (two steps) → vtl-eval (grounding, then score). Annotations,
media, the manifest, every shard folder and the evaluation outputs are s3:// URLs; the checkpoint is a local path,
the one thing vtl-train keeps out of object storage (an s3:// --out is refused in one line: the last test)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.cli import dist_env, invoke  # noqa: F401  (dist_env: a fixture)
from typer.testing import CliRunner

from infra import storage
from pipeline.contract.shards import iter_samples, read_index
from pipeline.synth.media import frame_counter_video

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
EVENTS = [{"start": 0.5, "end": 1.5, "caption": "the grey gets lighter"},
          {"start": 2.0, "end": 3.5, "caption": "the bar stays still"}]





def annotations(s3: str, tmp_path: Path) -> str:
    """Two small videos and a files-reader JSONL naming them by URL, with a caption and two events each."""
    lines = []
    for i in range(2):
        url = f"{s3}/media/clip{i}.mp4"
        storage.upload(frame_counter_video(tmp_path / f"clip{i}.mp4", 40 + 5 * i, 10.0), url)
        lines.append(json.dumps({"media": url, "caption": f"a grey clip number {i}", "events": EVENTS}))
    storage.write_bytes_atomic(f"{s3}/ann/clips.jsonl", "\n".join(lines).encode() + b"\n")
    return f"{s3}/ann/clips.jsonl"


def test_the_chain_runs_on_s3(s3, tmp_path, monkeypatch, dist_env):
    """~60 s on 2 busy cores (load 8-14), most of it imports (open_clip, DeepSpeed) and extract's preprocessing."""
    from eval.cli import app as eval_app
    from pipeline.cli import app as pipeline_app
    from train.cli import app as train_app

    monkeypatch.chdir(tmp_path)  # a stray relative ./s3: folder would land here
    monkeypatch.setenv("VTL_SPOOL_DIR", str(tmp_path))
    manifest, feats, qa, evals = (f"{s3}/manifest.parquet", f"{s3}/features", f"{s3}/qa1", f"{s3}/eval-grounding")
    invoke(pipeline_app, "manifest", "--dataset", "files", "--annotations", annotations(s3, tmp_path),
           "--out", manifest)
    invoke(pipeline_app, "extract", "--manifest", manifest, "--out", feats, "--executor", "local", "--tasks", "1",
           "--samples-per-shard", "1", "--clip-model", "tiny-random", "--fast-resize", "--no-progress")
    assert read_index(feats)["totals"] == {**read_index(feats)["totals"], "samples": 2, "errors": 0}
    invoke(pipeline_app, "inspect", feats, "--verify")
    invoke(pipeline_app, "build-qa", "--stage", "1", "--features", feats, "--out", qa, "--samples-per-shard", "1",
           "--no-progress")
    invoke(pipeline_app, "build-qa", "--benchmark", "grounding", "--features", feats, "--out", evals,
           "--no-progress")
    assert len(list(iter_samples(qa))) == 2 and len(read_index(evals)["shards"]) >= 1

    ckpt = tmp_path / "ckpt"
    invoke(train_app, "--stage", "1", "--shards", qa, "--llm", "tiny-random", "--out", str(ckpt), "--max-steps", "2",
           "--micro-batch", "2", "--global-batch", "2", "--zero", "0", "--num-workers", "0", "--no-progress",
           "--token-cache", str(tmp_path / "token-cache"))
    assert [json.loads(x)["step"] for x in (ckpt / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((ckpt / "run_config.json").read_text())["shards"]["dir"] == qa
    assert list((tmp_path / "token-cache").glob("*.npz")), "token tables of the s3:// shards cached locally"

    out = f"{s3}/results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: tiny-model generation is faster on one thread
    try:
        invoke(eval_app, "grounding", "--checkpoint", str(ckpt), "--shards", evals, "--out", out,
               "--conv-format", "v1", "--max-new-tokens", "6", "--batch-size", "4", "--device", "cpu")
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(x) for x in storage.read_text(f"{out}/predictions.jsonl").splitlines()]
    assert len(lines) == 4 and {x["key"] for x in lines} == {"clip0", "clip1"}
    assert storage.read_json(f"{out}/metrics.json")["n"] == 4
    assert storage.read_json(f"{out}/run_config.json")["config"]["out"] == out
    assert {"grounding.png", "timeline.png"} <= set(storage.listdir(out))
    # `score` reads local files and may write to the store: the same metrics from the downloaded predictions
    local = {name: storage.fetch(f"{where}/{name}", str(tmp_path / "fetched"))
             for where, name in ((out, "predictions.jsonl"), (f"{s3}/ann", "clips.jsonl"))}
    durations = tmp_path / "durations.csv"  # the annotations have none: extract measured them
    durations.write_text("id,duration\n" + "".join(f"{x['key']},{x['duration']}\n" for x in lines))
    invoke(eval_app, "score", "--benchmark", "grounding", "--predictions", local["predictions.jsonl"],
           "--annotations", local["clips.jsonl"], "--dataset", "files", "--durations", str(durations),
           "--out", f"{s3}/rescored")
    assert storage.read_json(f"{s3}/rescored/metrics.json") == storage.read_json(f"{out}/metrics.json")
    assert not list(tmp_path.glob("s3*")) and not list(tmp_path.glob("vtl-*")), "no ./s3: folder, spool cleaned"


def test_object_store_checkpoints_are_refused_before_any_work(s3, tmp_path, monkeypatch, dist_env):
    from eval.cli import app as eval_app
    from train.cli import app as train_app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(train_app, ["--stage", "1", "--shards", f"{s3}/qa", "--llm", "tiny-random", "--out",
                                         f"{s3}/ckpt"])
    assert res.exit_code == 2 and "--out s3://" in res.output and "not in object storage" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(train_app, ["--stage", "1", "--shards", "s3://no-such-bucket-vtl/qa", "--llm",
                                         "tiny-random", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "does not exist" in res.output, res.output
    res = CliRunner().invoke(eval_app, ["grounding", "--checkpoint", f"{s3}/ckpt", "--shards", f"{s3}/e", "--out",
                                        str(tmp_path / "e")])
    assert res.exit_code == 2 and "--checkpoint s3://" in res.output
    res = CliRunner().invoke(eval_app, ["grounding", "--checkpoint", str(tmp_path), "--shards", f"{s3}/e", "--out",
                                        "s3://no-such-bucket-vtl/results"])
    assert res.exit_code == 2 and "--out s3://no-such-bucket-vtl/results: bucket" in res.output, res.output
    assert not list(tmp_path.iterdir()), "nothing written, no ./s3: folder"
