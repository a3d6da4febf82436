"""bench/gpu/run.sh --dry-run: the GPU call's script, on CPU with tiny sizes, leaves a figure in every section.

Not `gpu`-marked: it runs in the default suite, so the script is proven before any GPU time is spent on it.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_gpu_bench_dry_run_fills_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "DS_ACCELERATOR": "cpu"}
    env.pop("OUT", None)
    t = time.perf_counter()
    # --budget-scale 3: the phases' caps are sized for an idle 2-core box; a shared CI machine may be 3x slower
    run = subprocess.run(["bash", str(ROOT / "bench/gpu/run.sh"), "--dry-run", "--budget-scale", "3", "--out",
                          str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    fig = json.loads((tmp_path / "figures.json").read_text())
    log = (tmp_path / "gpu_bench.log").read_text()
    assert "vtl GPU bench (DRY RUN" in log and (tmp_path / "table.txt").is_file()
    ph = fig["phases"]
    assert set(ph) == {"tests", "encoder", "decode", "train_z2", "train_z3", "eval"}
    assert {name: d["status"] for name, d in ph.items()} == dict.fromkeys(ph, "ok"), \
        {n: d.get("error") for n, d in ph.items()}
    tests = ph["tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == 0 and tests["errors"] == 0 and tests["skipped"] >= 4
    enc = [r for r in ph["encoder"]["rows"] if "frames_per_s" in r]
    assert {(r["path"].split()[0], r["compile"]) for r in enc} == {("vtl", False), ("device", False),
                                                                  ("device", True)}
    assert all(_number(r["frames_per_s"]) and _number(r["pct_ceiling"]) for r in enc)
    assert _number(ph["encoder"]["best_fps"])
    dec = ph["decode"]["rows"]
    assert len(dec) == 4 and all(_number(r["mbit_per_s"]) for r in dec) and all(_number(r["frames_per_s_per_core"]) and _number(r["cores_per_gpu"]) for r in dec)
    for z in (2, 3):
        tr = ph[f"train_z{z}"]
        assert tr["engine"] == "deepspeed" and tr["zero"] == z and tr["steps_timed"] >= 1
        assert all(_number(tr[k]) for k in ("tokens_per_s", "mfu", "mfu_6n_convention", "step_s_median"))
        assert all(_number(x) for x in tr["losses"])
    ev = ph["eval"]["rows"]
    assert [r["batch"] for r in ev] == [1, 2, 4] and all(_number(r["queries_per_s"]) for r in ev)
    print(f"\ndry run: {seconds:.0f}s wall, bench {fig['total_s']}s")
