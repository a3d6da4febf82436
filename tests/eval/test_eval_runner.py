"""`vtl-eval grounding|dvc` end to end on CPU: tiny random checkpoint, evaluation shards, batched generation."""
import json
import shutil

import pytest
import torch
from support.evaluation import VIDEOS, eval_shards
from typer.testing import CliRunner

from eval.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grounding_end_to_end(tmp_path, ckpt):
    shards = eval_shards(tmp_path / "shards", "grounding")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["grounding", "--checkpoint", str(ckpt), "--shards", str(shards), "--out", str(out),
                                   "--batch-size", "3", "--max-new-tokens", "12"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == sum(len(ev) for _, ev in VIDEOS.values())  # one line per query
    assert {x["video"] for x in lines} == {f"src_{k}" for k in VIDEOS}
    assert all(isinstance(x["answer"], str) for x in lines)
    assert lines[0]["query"] == "During which frames can we see a man opens a door?"
    m = json.loads((out / "metrics.json").read_text())
    assert m["missing"] == 0  # every query of the shards was answered
    assert m["scoring"] == "vtimellm" and set(m["lenient"]) - {"rules"} == {
        k for k in m if k not in ("scoring", "lenient", "missing_rule") and not k.startswith("missing")}
    assert set(m) - {"scoring", "lenient", "missing", "missing_queries", "missing_rule"} == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "n", "unparsed"} and m["n"] == len(lines)
    assert 0 <= m["unparsed"] <= 100 and (out / "grounding.png").is_file() and (out / "timeline.png").is_file()
    run = json.loads((out / "run_config.json").read_text())
    assert run["generation"]["conv_format"] == "v1" and run["config"]["batch_size"] == 3
    # One-at-a-time generation gives the same answers (greedy decoding, left padding is masked out).
    out1 = tmp_path / "out1"
    res = CliRunner().invoke(app, ["grounding", "--checkpoint", str(ckpt), "--shards", str(shards), "--out", str(out1),
                                   "--batch-size", "1", "--max-new-tokens", "12"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["answer"] for x in (out1 / "predictions.jsonl").read_text().splitlines()] == \
        [x["answer"] for x in lines]


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_dvc_end_to_end_and_rescore(tmp_path, ckpt):
    shards = eval_shards(tmp_path / "shards", "dvc")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["dvc", "--checkpoint", str(ckpt), "--shards", str(shards), "--out", str(out),
                                   "--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len(VIDEOS) and all("Could you please describe" in x["query"] for x in lines)
    m = json.loads((out / "metrics.json").read_text())
    assert m["missing"] == 0  # every query of the shards was answered
    assert m["scoring"] == "vtimellm" and set(m["lenient"]) - {"rules"} == {
        k for k in m if k not in ("scoring", "lenient", "missing_rule") and not k.startswith("missing")}
    assert set(m) - {"scoring", "lenient", "missing", "missing_videos", "missing_rule"} == {"SODA_c", "CIDEr", "METEOR", "BLEU4", "n", "unparsed"} and m["n"] == len(VIDEOS)
    # A random model writes no parsable events: every video is a miss, and it is reported.
    assert m["unparsed"] == 100.0 and m["SODA_c"] == 0.0 and (out / "dvc.png").is_file()
    assert (out / "timeline.png").is_file()  # every video drawn as unparsable


def test_wrong_shards_are_refused(tmp_path, ckpt):
    shards = eval_shards(tmp_path / "shards", "dvc")
    res = CliRunner().invoke(app, ["grounding", "--checkpoint", str(ckpt), "--shards", str(shards), "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a grounding evaluation sample" in res.output


def test_read_eval_shards_limit_and_truth(tmp_path):
    from eval.runner import read_eval_shards

    shards = eval_shards(tmp_path / "shards", "grounding")
    items, truth = read_eval_shards(shards, "grounding", limit=3)
    assert [it.query_id for it in items] == ["vidA_q0", "vidA_q1", "vidB_q0"]
    assert truth["vidA"].duration == 30.0 and truth["vidA"].events[1] == ((12.0, 30.0), "He sits down on a chair.")
    assert items[0].features.shape == (100, 768)


def test_config_errors_are_clear(tmp_path, ckpt):
    from eval.config import EvalConfig, resolve_device

    shards = eval_shards(tmp_path / "shards", "grounding")
    with pytest.raises(ValueError, match="benchmark must be"):
        EvalConfig(benchmark="caption", checkpoint=ckpt, shards=shards, out=tmp_path)
    with pytest.raises(FileNotFoundError, match="shard folder"):
        EvalConfig(benchmark="dvc", checkpoint=ckpt, shards=tmp_path / "none", out=tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(benchmark="dvc", checkpoint=ckpt, shards=shards, out=tmp_path, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda", "auto")
    assert resolve_device("cpu", "auto") == ("cpu", torch.float32)


def test_eval_shards_stream_in_chunks(tmp_path):
    from eval.runner import iter_eval_chunks, read_eval_shards

    shards = eval_shards(tmp_path / "shards", "grounding")
    chunks = list(iter_eval_chunks(shards, "grounding", chunk=2))
    # whole samples per chunk: vidA (2 queries) | vidB (2) | vidC (1)
    assert [[it.query_id for it in items] for items, _ in chunks] == \
        [["vidA_q0", "vidA_q1"], ["vidB_q0", "vidB_q1"], ["vidC_q0"]]
    assert [sorted(truth) for _, truth in chunks] == [["vidA"], ["vidB"], ["vidC"]]
    all_items, _ = read_eval_shards(shards, "grounding")
    assert [it.query_id for it in all_items] == [it.query_id for items, _ in chunks for it in items]


def test_eval_shards_built_before_the_glossary_rename_are_read(tmp_path):
    from eval.runner import read_eval_shards

    new_items, new_truth = read_eval_shards(eval_shards(tmp_path / "new", "grounding"), "grounding")
    old_items, old_truth = read_eval_shards(eval_shards(tmp_path / "old", "grounding", old_keys=True), "grounding")
    assert [it.query for it in old_items] == [it.query for it in new_items] and old_truth == new_truth
    with pytest.raises(ValueError, match="build-qa --benchmark dvc"):
        read_eval_shards(tmp_path / "old", "dvc")
