"""The end-to-end chain of `make demo`, smaller: synth → manifest → extract → build-qa → LM warm-up → stages 1-3 → eval.

Slow (several minutes on 2 cores): run with `make test-slow`. It checks what the chain must get right whatever the
model learns: every step runs through the command-line tools, every shard set verifies against its index, the report
has the promised fields, and the chance baselines are what an independent computation from the annotations gives.
Whether the model learns grounding is asserted by tests/test_demo_learns.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    subprocess.run([sys.executable, str(ROOT / "demo" / "run_demo.py"), "--out", str(out), "--videos", "40",
                    "--images", "96", "--steps-scale", "0.1"], check=True, cwd=ROOT)
    return out


@pytest.mark.slow
def test_report_has_every_field(demo):
    report = json.loads((demo / "report.json").read_text())
    for name in ("model", "chance_random", "chance_whole"):
        assert set(KEYS) <= set(report[name]), name
        assert report[name]["n"] == report["model"]["n"] > 0
    for step in ("synth", "manifest", "extract", "build-qa", "pretrain-llm", "train-stage1", "train-stage2",
                 "train-stage3", "eval", "total"):
        assert report["seconds"][step] > 0
    assert (demo / "loss.png").stat().st_size > 1000
    for stage in (1, 2, 3):
        metrics = demo / "checkpoints" / f"stage{stage}" / "metrics.jsonl"
        rows = [json.loads(x) for x in metrics.read_text().splitlines()]
        assert rows and all({"step", "loss", "lr"} <= set(r) for r in rows)


@pytest.mark.slow
def test_every_shard_set_verifies(demo):
    for folder in sorted((demo / "features").iterdir()) + sorted((demo / "qa").iterdir()):
        proc = subprocess.run([str(Path(sys.executable).parent / "vtl-pipeline"), "inspect", str(folder), "--verify"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (folder, proc.stdout[-2000:])


@pytest.mark.slow
def test_whole_video_baseline_matches_the_annotations(demo):
    """mIoU of the whole-video span = mean over queries of (event length / duration), from the annotations alone."""
    truth = json.loads((demo / "synth" / "annotations" / "test.json").read_text())
    ratios = [(e - s) / v["duration"] for v in truth.values() for s, e in v["timestamps"]]
    expected = 100 * sum(round(r, 2) for r in ratios) / len(ratios)  # the scorer rounds each IoU to 2 decimals
    report = json.loads((demo / "report.json").read_text())
    assert report["chance_whole"]["n"] == len(ratios)
    assert report["chance_whole"]["mIoU"] == pytest.approx(expected, abs=0.01)
