"""`build-qa --generate --llm`: `tiny-random` means what it means for vtl-train (the shared recipe), and a hub name
with no hub is one line within seconds (issue 25 item 3). Real `vtl-pipeline` processes; the only "hub" is
HF_ENDPOINT on a closed 127.0.0.1 port, with an empty hub cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.qa import video_meta, write_feature_shards

from pipeline.contract.shards import read_errors, read_index
from pipeline.qa.build import BuildQaConfig, run_build_qa
from tests.infra.test_hub import closed_port_endpoint

ROOT = Path(__file__).resolve().parents[3]
CAPTIONS = ["A man walks into the room", "A woman picks up a red ball", "The dog runs across the yard"]


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    metas = [video_meta(f"v{i}", 50.0, [{"start": 10.0 * j, "end": 10.0 * j + 8, "caption": CAPTIONS[j % 3]}
                                        for j in range(3)]) for i in range(3)]
    out = tmp_path_factory.mktemp("gen-offline") / "feats"
    write_feature_shards(out, metas)
    return out


def build_qa(feats: Path, out: Path, llm: str, tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env = {**base, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_ENDPOINT": closed_port_endpoint(), **env}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "build-qa", "--stage", "3", "--generate", "--llm",
                           llm, "--features", str(feats), "--out", str(out), "--max-new-tokens", "16",
                           "--no-progress"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("offline", [False, True], ids=["unreachable", "HF_HUB_OFFLINE"])
def test_a_hub_name_with_no_hub_is_one_line_in_seconds(feats, tmp_path, offline):
    proc, seconds = build_qa(feats, tmp_path / "out", "someorg/some-model", tmp_path,
                             **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: --llm someorg/some-model: not a local path") and "local folder" in lines[0]
    assert ("HF_HUB_OFFLINE" in lines[0]) == offline and seconds < 10
    assert "Retrying" not in proc.stdout + proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow  # two generation runs, one a subprocess: ~30 s on a loaded 2-core machine
def test_tiny_random_generates_end_to_end_and_as_in_process(feats, tmp_path):
    proc, _ = build_qa(feats, tmp_path / "cli", "tiny-random", tmp_path)
    # random weights write garbage: every dialogue is an error record with its reason, so nothing is written
    assert proc.returncode == 1 and "no sample written" in proc.stderr, proc.stderr[-3000:]
    errors = read_errors(tmp_path / "cli")
    assert len(errors) == 6 and all(e.reason.startswith("llm_") and "text:" in e.detail for e in errors)
    run_config = json.loads((tmp_path / "cli" / "run_config.json").read_text())
    assert run_config["generation"]["model"] == "tiny-random"
    budget = read_index(tmp_path / "cli")["qa"]["token_budget"]
    assert budget["checked"] and budget["tokenizer"] == "tiny-random"
    # the same model from the same seed in this process: the same generations, byte for byte
    run_build_qa(BuildQaConfig(features=feats, out=tmp_path / "lib", stage="3", generate=True, llm=Path("tiny-random"),
                               max_new_tokens=16, progress=False))
    assert (tmp_path / "lib" / "errors.jsonl").read_text() == (tmp_path / "cli" / "errors.jsonl").read_text()
