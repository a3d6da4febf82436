"""ZeRO-3 builds the LLM partitioned: two CPU ranks (gloo) under torchrun.

Before `deepspeed.initialize`, every LLM weight is already a DeepSpeed partition (half on each rank, nothing whole
locally), for tiny-random, for `--llm PATH` and for stage 3's merged LLM; gathered, those weights equal an
unpartitioned build's bit for bit. Training losses under ZeRO-3 equal ZeRO-2's (the full-build path) for stages 1-3
(measured: identical to the pre-change ZeRO-3 path, and within ~2e-7 of ZeRO-2, which reduces in another order).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import ENV, data, losses  # noqa: F401  (`data`: test_train's shard fixture, built anew here)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
COMMON = dict(micro_batch=2, global_batch=8, max_steps=3, lr=2e-3, lora_r=4, lora_alpha=8, num_workers=1,
              gradient_checkpointing=False, progress=False)


def two_ranks(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(TORCHRUN + args, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)  # 2 ranks on 2 shared cores: slow under load
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train(out: Path, stage: int, shards: Path, zero: int, prev: Path | None = None) -> Path:
    flags = {"stage": stage, "shards": shards, "llm": "tiny-random", "out": out, "from": prev, "zero": zero,
             **{k.replace("_", "-"): v for k, v in COMMON.items() if not isinstance(v, bool)}}
    args = [a for k, v in flags.items() if v is not None for a in (f"--{k}", str(v))]
    done = two_ranks(["-m", "train.cli", *args, "--no-gradient-checkpointing", "--no-progress"])
    (out / "stderr.txt").write_text(done.stderr)
    return out


@pytest.fixture(scope="module")
def stage1(data):
    return {zero: train(data["root"] / f"c1z{zero}", 1, data[1], zero) for zero in (3, 2)}


@pytest.fixture(scope="module")
def stage2(data, stage1):
    """Both from the ZeRO-3 stage-1 checkpoint, so only the ZeRO stage differs."""
    return {zero: train(data["root"] / f"c2z{zero}", 2, data[2], zero, stage1[3]) for zero in (3, 2)}


def test_stage1_zero3_trains_as_the_full_build(stage1):
    from safetensors.torch import load_file

    assert losses(stage1[3]) == pytest.approx(losses(stage1[2]), rel=1e-6, abs=0)
    held = [line for line in (stage1[3] / "stderr.txt").read_text().splitlines() if "built partitioned" in line]
    assert sorted(line.split("rank ")[1][0] for line in held) == ["0", "1"]
    mine, whole = (int(x) for x in held[0].split("holds ")[1].split(" LLM")[0].split(" of "))
    assert abs(mine - whole / 2) <= 64  # one element of padding per partitioned tensor at most
    assert "built partitioned" not in (stage1[2] / "stderr.txt").read_text()
    # rank 0 saved the tiny LLM whole, as the ZeRO-2 run did
    saved = [load_file(str(c / "llm" / "model.safetensors")) for c in (stage1[3], stage1[2])]
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])


def test_stage2_zero3_trains_as_the_full_build(stage2):
    assert losses(stage2[3]) == pytest.approx(losses(stage2[2]), rel=1e-6, abs=0)
    assert (stage2[3] / "adapter" / "adapter_model.safetensors").is_file()


def test_stage3_zero3_starts_from_the_merged_weights(data, stage2):
    """A user's `--zero 3` on stage 3 (preset: ZeRO-2): the stage-2 LoRA is merged into a partitioned LLM."""
    runs = {zero: train(data["root"] / f"c3z{zero}", 3, data[2], zero, stage2[3]) for zero in (3, 2)}
    assert losses(runs[3])[0] == pytest.approx(losses(runs[2])[0], rel=1e-6, abs=0)
    assert losses(runs[3]) == pytest.approx(losses(runs[2]), rel=1e-6, abs=0)


def test_llm_is_partitioned_before_deepspeed_initialize(data, stage1, stage2):
    """The model `train.loop.run` hands to DeepSpeed: LLM weights partitioned, and equal to a full build's."""
    from safetensors.torch import load_file

    from train.config import resolve_config
    from train.stages import prepare_model

    report = data["root"] / "probe"
    report.mkdir()
    cases = {"tiny": dict(stage=1, shards=str(data[1]), llm="tiny-random", out=str(report / "tiny")),
             "path": dict(stage=1, shards=str(data[1]), llm=str(stage1[3] / "llm"), out=str(report / "path")),
             "merged": dict(stage=3, shards=str(data[2]), llm="tiny-random", from_checkpoint=str(stage2[3]),
                            out=str(report / "merged"))}
    cases = {name: {**COMMON, **case, "zero": 3} for name, case in cases.items()}
    two_ranks([str(ROOT / "tests" / "train" / "zero3_probe.py"), str(report), json.dumps(cases)])
    for name, case in cases.items():
        ranks = [json.loads((report / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]
        assert all(r["flag_inside"] and not r["flag_after"] for r in ranks)
        llm = {n: [r["params"][n] for r in ranks] for n in ranks[0]["params"]
               if n.startswith("llm.") and "lora_" not in n}
        assert llm and all(p["ds_id"] and p["local"] == 0 for both in llm.values() for p in both), name
        assert all(abs(p["partition"] - p["full"] / 2) <= 1 for both in llm.values() for p in both), name
        # the same model an unpartitioned build gives (today's path for ZeRO 0-2 and the torch engine)
        stage = case.pop("stage")
        full = prepare_model(resolve_config(stage, **{**case, "out": str(report / f"{name}-full"), "world_size": 2}))
        gathered = load_file(str(report / f"{name}.safetensors"))
        state = dict(full.named_parameters())
        assert gathered.keys() == state.keys()
        assert all(torch.equal(gathered[n], state[n].detach()) for n in state), name
    # the merge changed the weights: stage 3 does not start from the bare stage-1 LLM
    base = load_file(str(stage1[3] / "llm" / "model.safetensors"))
    merged = load_file(str(report / "merged.safetensors"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[f"llm.base_model.model.{q.replace('weight', 'base_layer.weight')}"], base[q])
