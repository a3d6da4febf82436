"""The training loop end to end on CPU (DeepSpeed over gloo, tiny-random LLaMA): the vtl-train command, all three
stages with falling losses, kill-and-resume with an identical loss sequence, and two ranks on disjoint data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.training import write_training_shards

from train.config import TrainConfig, load_preset, preset_path, resolve_config

# DeepSpeed calls torch collectives torch has renamed, and transformers renamed a checkpointing property: noise.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)  # an in-process run sets these; child processes get their own


def vtl_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "train.cli", *args]


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def falls(seq: list[float]) -> bool:
    return sum(seq[-3:]) / 3 < sum(seq[:3]) / 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {"root": root, 1: write_training_shards(root / "s1", n=48, stage=1, per_shard=8, rows=1),
            2: write_training_shards(root / "s2", n=48, stage=2, per_shard=8, rows=4, seed=1)}


@pytest.fixture(scope="module")
def stage1(data):
    """The documented command, exactly: stage 1 on CPU with the stage-1 preset (ZeRO-3, global batch 128)."""
    out = data["root"] / "c1"
    cmd = vtl_train("--stage", "1", "--shards", str(data[1]), "--llm", "tiny-random", "--out", str(out),
                    "--max-steps", "20")
    done = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_presets_load_and_flags_override(tmp_path):
    for stage in (1, 2, 3):
        preset = load_preset(preset_path(None, stage))
        assert preset["global_batch"] == 128 and preset["warmup_ratio"] == 0.03
    cfg = resolve_config(2, shards="s", llm="x", out="o", from_checkpoint="c", lr=5e-4, world_size=1)
    assert (cfg.lr, cfg.zero, cfg.lora_r, cfg.accumulation) == (5e-4, 3, 64, 16)
    assert resolve_config(1, shards="s", llm="x", out="o", world_size=4).accumulation == 2
    with pytest.raises(ValueError, match="not divisible"):
        resolve_config(1, shards="s", llm="x", out="o", world_size=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_config(1, shards="s", llm="x", out="o", preset=str(bad))
    with pytest.raises(ValueError, match="--from"):
        TrainConfig(stage=3, shards="s", llm="x", out="o")


def test_stage1_command_writes_checkpoint_and_metrics(stage1):
    rows = [json.loads(line) for line in (stage1 / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all({"step", "loss", "lr", "tokens", "padded_tokens"} <= set(r) for r in rows)
    assert rows[-1]["tokens"] > rows[0]["tokens"] > 0 and rows[-1]["padded_tokens"] >= rows[0]["padded_tokens"] >= 0
    assert falls([r["loss"] for r in rows])
    assert rows[0]["lr"] == 0.0 and max(r["lr"] for r in rows) == pytest.approx(1e-3)
    meta = json.loads((stage1 / "vtl_checkpoint.json").read_text())
    assert meta["stage"] == 1 and meta["llm"] == {"source": "tiny-random", "saved": "llm"}
    run_config = json.loads((stage1 / "run_config.json").read_text())
    assert run_config["producer"]["name"] == "vtl" and run_config["config"]["zero"] == 3
    assert run_config["plan"]["accumulation"] == 8
    assert (stage1 / "projector.safetensors").is_file() and list((stage1 / "tensorboard").glob("events.*"))
    assert len(list((stage1 / "token-cache").glob("train-*.npz"))) == 6  # one token table per shard


def small(data, stage: int, out: Path, prev: Path | None, **kw) -> TrainConfig:
    base = dict(shards=str(data[2]), llm="tiny-random", out=str(out), from_checkpoint=str(prev) if prev else None,
                micro_batch=4, global_batch=8, max_steps=8, lr=2e-3, zero=2, lora_r=8, lora_alpha=16,
                gradient_checkpointing=False, num_workers=1, shuffle_buffer=8, progress=False, world_size=1)
    return resolve_config(stage, **{**base, **kw})


def cli_args(cfg: TrainConfig) -> list[str]:
    """The flags that reproduce `cfg` (as built by `small`) on the command line."""
    args = ["--stage", str(cfg.stage), "--shards", cfg.shards, "--llm", cfg.llm, "--out", cfg.out,
            "--from", cfg.from_checkpoint, "--no-gradient-checkpointing", "--no-progress"]
    for name in ("micro_batch", "global_batch", "max_steps", "lr", "zero", "lora_r", "lora_alpha", "num_workers",
                 "shuffle_buffer", "save_every"):
        if getattr(cfg, name) is not None:
            args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return args


STAGE2 = dict(max_steps=8, save_every=2, num_workers=2, zero=3)  # ZeRO-3 as in the stage-2 preset


@pytest.fixture(scope="module")
def stage2(data, stage1):
    """Stage 2 in-process from the stage-1 checkpoint; also the uninterrupted reference of the resume test."""
    from train.loop import run

    return run(small(data, 2, data["root"] / "c2", stage1, **STAGE2))


def test_stages_2_and_3_train_from_the_previous_checkpoint(data, stage1, stage2):
    from safetensors.torch import load_file

    c2 = stage2
    # Stage 3 as documented: `vtl-train --stage 3 --shards DIR --from STAGE2_DIR --llm PATH` (PATH: a local HF folder).
    cfg3 = small(data, 3, data["root"] / "c3", c2, llm=str(stage1 / "llm"))
    done = subprocess.run(vtl_train(*cli_args(cfg3), "--token-cache", "off"), env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    c3 = Path(cfg3.out)
    assert not (c3 / "token-cache").exists() and len(list((c2 / "token-cache").glob("*.npz"))) == 6
    assert falls(losses(c2)) and falls(losses(c3))
    m2, m3 = (json.loads((c / "vtl_checkpoint.json").read_text()) for c in (c2, c3))
    assert m2["adapters"] == ["adapter"] and m3["adapters"] == ["base_adapters/00", "adapter"]
    p1, p3 = load_file(str(stage1 / "projector.safetensors")), load_file(str(c3 / "projector.safetensors"))
    assert all((p1[k] == p3[k]).all() for k in p1)  # the stage-1 projector stays frozen through stages 2 and 3


def test_an_in_process_zero3_run_leaves_torch_linear_as_it_was(stage2):
    import torch

    assert torch.nn.functional.linear is torch._C._nn.linear  # DeepSpeed swaps it during a ZeRO-3 run


def test_kill_and_resume_gives_the_same_losses(data, stage1, stage2):
    from train.loop import run

    ref, options = stage2, STAGE2
    out = data["root"] / "killed"
    cfg = small(data, 2, out, stage1, **options)
    proc = subprocess.Popen(vtl_train(*cli_args(cfg)), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "engine" / "latest").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = len((out / "metrics.jsonl").read_text().splitlines())
    assert killed_at < 8, "the run finished before it was killed"
    with pytest.raises(FileExistsError, match="--resume"):
        run(cfg)
    run(small(data, 2, out, stage1, resume=True, **options))
    assert losses(out) == pytest.approx(losses(ref), rel=1e-5)
    assert len(losses(out)) == 8
    assert [d.name for d in (out / "engine").glob("step*")] == ["step00000008"]  # only the latest is kept


def test_packed_training_gives_the_unpacked_losses_without_padding(data, stage1):
    """Same samples, same order (grouping on), LoRA dropout off so both see the same network: packing changes only
    how the micro-batch is laid out, so losses agree to float tolerance and no padding is computed."""
    from train.loop import run

    rows = {}
    for pack in (False, True):
        out = run(small(data, 2, data["root"] / f"pack-{pack}", stage1, max_steps=4, lora_dropout=0.0, pack=pack))
        rows[pack] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows[True]] == pytest.approx([r["loss"] for r in rows[False]], rel=1e-4)
    assert [r["tokens"] for r in rows[True]] == [r["tokens"] for r in rows[False]]
    assert rows[True][-1]["padded_tokens"] == 0 < rows[False][-1]["padded_tokens"]


@pytest.mark.slow  # two full training processes: ~35 s on 2 cores
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_two_ranks_see_disjoint_data(data, stage1, launcher):
    out = data["root"] / f"ddp-{launcher}"
    if launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29641", "-m"]
    else:  # the deepspeed launcher appends --local_rank=N, which vtl-train accepts
        start = [str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", "2", "--master_port", "29643",
                 "--module"]
    cmd = start + ["train.cli", "--stage", "2", "--shards", str(data[2]), "--llm", "tiny-random", "--from",
                   str(stage1), "--out", str(out), "--micro-batch", "2", "--global-batch", "8", "--max-steps", "5",
                   "--zero", "2", "--lora-r", "4", "--lora-alpha", "8", "--num-workers", "1", "--log-keys",
                   "--no-progress", "--no-gradient-checkpointing"]
    done = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = []
    for rank in (0, 1):
        rows = [json.loads(line) for line in (out / f"keys.rank{rank}.jsonl").read_text().splitlines()]
        keys = [k for r in rows for k in r["keys"]]
        assert len(keys) == 5 * 2 * 2 and len(set(keys)) == len(keys)
        seen.append(set(keys))
    assert not seen[0] & seen[1]
    assert len(losses(out)) == 5 and json.loads((out / "run_config.json").read_text())["plan"]["world_size"] == 2


def test_cli_reports_a_wrong_option_without_training(tmp_path):
    from typer.testing import CliRunner

    from train.cli import app

    res = CliRunner().invoke(app, ["--stage", "1", "--shards", "s", "--llm", "tiny-random", "--out", str(tmp_path),
                                   "--micro-batch", "3"])
    assert res.exit_code == 2 and "not divisible" in res.output
    res = CliRunner().invoke(app, ["--stage", "3", "--shards", "s", "--llm", "x", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--from" in res.output
    assert not list(tmp_path.iterdir())
