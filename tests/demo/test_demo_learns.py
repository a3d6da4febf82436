"""The demo's learning criterion, on a smaller run: a tiny model trained through the whole chain grounds held-out
events at least twice as well (mIoU) as the better chance baseline, and does not once build-qa's timestamps are
shifted by 10 positions (the test-only misalignment switch).

Slow (two small demo runs, several minutes each on 2 cores): `make test-slow`. `VTL_DEMO_TIMESTAMP_SHIFT=10` makes
`test_model_learns_grounding` itself train on shifted timestamps, and fail.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "demo"))

from run_demo import meets_criterion  # noqa: E402

# Fewer videos and steps than the demo; events a little longer (gap scale 8, ~27 % of a video) so that 204 training
# videos suffice. A model that learned the shifted answers perfectly would average mIoU 40 here, against a bar of ~51.
SMALL = ["--videos", "240", "--images", "256", "--steps-scale", "0.75", "--gap-scale", "8"]


def small_demo(out: Path, shift: int) -> dict:
    subprocess.run([sys.executable, str(ROOT / "demo" / "run_demo.py"), "--out", str(out), *SMALL,
                    "--timestamp-shift", str(shift)], check=True, cwd=ROOT)
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_model_learns_grounding(tmp_path):
    shift = int(os.environ.get("VTL_DEMO_TIMESTAMP_SHIFT", "0"))
    report = small_demo(tmp_path / "run", shift)
    best = max(report["chance_random"]["mIoU"], report["chance_whole"]["mIoU"])
    assert meets_criterion(report), f"model mIoU {report['model']['mIoU']:.1f} < 2 × chance {best:.1f}"


@pytest.mark.slow
def test_shifted_timestamps_do_not_meet_the_criterion(tmp_path):
    report = small_demo(tmp_path / "shifted", 10)
    assert report["config"]["timestamp_shift"] == "10"
    assert not meets_criterion(report), report["model"]
