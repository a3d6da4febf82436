"""YouCook2 end to end through the real commands: annotations in PDVC's `yc2_*.json` layout (with `subset` and
`recipe_type`) whose videos are generated here, at the annotated durations, in the released raw-video tree →
`vtl-pipeline manifest --dataset youcook2 --media-root` → `extract` (local executor, tiny-random CLIP) →
`build-qa --benchmark dvc` → `vtl-eval dvc` with a tiny random checkpoint; then `vtl-eval score` of the written
predictions against the same annotation file gives the same figures."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support.evaluation import tiny_checkpoint
from typer.testing import CliRunner

from pipeline.contract.shards import iter_samples
from pipeline.synth.media import write_video

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")]
FPS = 10.0
YC2 = {  # whole-second timestamps, lower-case sentences, bare YouTube-style ids, as in PDVC's yc2_val.json
    "aB3dE5fG7hI": {"duration": 6.0, "subset": "validation", "recipe_type": "113",
                    "timestamps": [[0, 2], [2, 5]],
                    "sentences": ["spread butter on the bread", "place the cheese on the bread"]},
    "Zy9xW8vU7tS": {"duration": 8.0, "subset": "validation", "recipe_type": "201",
                    "timestamps": [[1, 3], [3, 6], [6, 8]],
                    "sentences": ["chop the onion", "fry the onion in oil", "add the rice and stir"]},
    "Qq1Rr2Ss3Tt": {"duration": 5.0, "subset": "validation", "recipe_type": "113",
                    "timestamps": [[0, 4]], "sentences": ["toast the bread in a pan"]},
}


def invoke(app, *args: str) -> str:
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, (args[0], res.output, res.exception)
    return res.output


def media_tree(root) -> None:
    """Each video at its annotated duration; two in `{subset}/{recipe_type}/{vid}.mp4`, one flat as `{vid}.mp4`."""
    gen = np.random.default_rng(0)
    for i, (vid, entry) in enumerate(YC2.items()):
        frames = gen.integers(0, 256, (int(entry["duration"] * FPS), 48, 64, 3), dtype=np.uint8)
        folder = root if i == 2 else root / entry["subset"] / entry["recipe_type"]
        write_video(folder / f"{vid}.mp4", frames, fps=FPS)


@pytest.mark.slow
def test_youcook2_manifest_extract_build_qa_eval_dvc(tmp_path, monkeypatch):
    from eval.cli import app as eval_app
    from pipeline.cli import app as pipeline_app

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    ann = tmp_path / "yc2_val.json"
    ann.write_text(json.dumps(YC2))
    media_tree(tmp_path / "raw")
    manifest, feats, qa, out = (tmp_path / x for x in ("m.parquet", "feats", "qa", "eval"))
    invoke(pipeline_app, "manifest", "--dataset", "youcook2", "--annotations", str(ann), "--out", str(manifest),
           "--media-root", str(tmp_path / "raw"))
    invoke(pipeline_app, "extract", "--manifest", str(manifest), "--out", str(feats), "--executor", "local",
           "--tasks", "1", "--clip-model", "tiny-random", "--device", "cpu", "--no-progress")
    invoke(pipeline_app, "build-qa", "--benchmark", "dvc", "--features", str(feats), "--out", str(qa),
           "--no-progress")
    samples = {s.key: s for s in iter_samples(qa)}
    assert sorted(samples) == sorted(YC2)
    for vid, s in samples.items():  # the ground truth the shards carry is the annotation's, in seconds
        assert s.meta["dataset"] == "youcook2" and s.meta["duration"] == pytest.approx(YC2[vid]["duration"])
        assert [[e["start"], e["end"]] for e in s.meta["events"]] == YC2[vid]["timestamps"]
        assert [e["caption"] for e in s.meta["events"]] == YC2[vid]["sentences"]

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    invoke(eval_app, "dvc", "--checkpoint", str(ckpt), "--shards", str(qa), "--out", str(out), "--max-new-tokens",
           "24", "--device", "cpu", "--timeline-videos", "0")
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"SODA_c", "CIDEr", "METEOR", "BLEU4"} <= set(metrics) and metrics["n"] == len(YC2)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["video"] for p in preds) == sorted(YC2)

    invoke(eval_app, "score", "--benchmark", "dvc", "--predictions", str(out / "predictions.jsonl"),
           "--annotations", str(ann), "--dataset", "youcook2", "--out", str(tmp_path / "score"))
    rescored = json.loads((tmp_path / "score" / "metrics.json").read_text())
    headline = ("SODA_c", "CIDEr", "METEOR", "BLEU4", "n", "unparsed")
    assert {k: rescored[k] for k in headline} == pytest.approx({k: metrics[k] for k in headline})
    assert rescored["missing"] == 0 and rescored["n"] == len(YC2)

    # the tiny model's answers are unparsable (every figure 0); one answer replaced by the ground truth in VTimeLLM's
    # JSON layout (0-99 of the annotated duration) is read back against the yc2 file: that video scores, the rest not
    vid, entry = next(iter(YC2.items()))
    items = [{"event": t, "timestamps": f"from {round(s / entry['duration'] * 100):02d} to "
              f"{min(round(e / entry['duration'] * 100), 99):02d}"} for (s, e), t in
             zip(entry["timestamps"], entry["sentences"])]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps({**p, "answer": json.dumps(items)} if p["video"] == vid else p) + "\n"
                              for p in preds))
    invoke(eval_app, "score", "--benchmark", "dvc", "--predictions", str(edited), "--annotations", str(ann),
           "--dataset", "youcook2", "--out", str(tmp_path / "edited"))
    m = json.loads((tmp_path / "edited" / "metrics.json").read_text())
    assert m["n"] == len(YC2) and m["unparsed"] == pytest.approx(200 / 3)
    assert 25.0 < m["METEOR"] <= 100 / 3 + 0.5 and 25.0 < m["SODA_c"] <= 100 / 3 + 0.5
