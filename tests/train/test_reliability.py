"""vtl-train under faults (issue 15, training items): each test builds the bad input or the fault and asserts the
outcome: a NaN loss stops the run naming the samples, a planted pickle in the engine folder runs nothing, run-time
refusals are one line with exit 2, a full disk leaves no partial save, kill -9 leaves no DataLoader worker, plain
progress lines off a terminal, and the training shards' encoder id travels into the checkpoint and is checked."""
from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.training import write_training_shards
from typer.testing import CliRunner

from train.config import resolve_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)
POISON = np.full((1, 768), 1234.0, dtype=np.float16)  # a byte pattern to find in the tar and overwrite with NaN


def cfg_for(shards: Path, out: Path, **kw):
    base = dict(shards=str(shards), llm="tiny-random", out=str(out), micro_batch=4, global_batch=8, max_steps=2,
                zero=2, gradient_checkpointing=False, num_workers=1, shuffle_buffer=8, progress=False, world_size=1)
    return resolve_config(1, **{**base, **kw})


def args_for(cfg, **replace) -> list[str]:
    """vtl-train's arguments for `cfg`; `replace` sets an option's value instead (an option given twice is refused)."""
    args = ["--stage", "1", "--shards", cfg.shards, "--llm", cfg.llm, "--out", cfg.out, "--no-gradient-checkpointing",
            "--no-progress"]
    for name in ("micro_batch", "global_batch", "max_steps", "zero", "num_workers", "shuffle_buffer", "save_every",
                 "lr"):
        args += [f"--{name.replace('_', '-')}", str(replace.pop(name, getattr(cfg, name)))]
    for name, value in replace.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def invoke(*args: str):
    from train.cli import app

    return CliRunner().invoke(app, list(args))


def one_line_error(res, code: int = 2) -> str:
    text = res.output
    assert res.exit_code == code, text[-2000:]
    assert "Traceback" not in text and text.count("error: ") == 1, text[-2000:]
    return text


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    return {"root": root, "clean": write_training_shards(root / "clean", n=32, stage=1, per_shard=8, rows=1)}


@pytest.fixture(scope="module")
def finished(data):
    """A finished two-step run with an engine save at every step."""
    from train.loop import run

    return run(cfg_for(data["clean"], data["root"] / "done", save_every=1))


def poisoned_shards(out: Path, bad: set[int]) -> Path:
    """Our writer's shards, then the features of samples `bad` overwritten with NaN in the tar bytes (what a
    corrupt or hostile shard holds; the writer itself is not asked to store NaN)."""
    import random

    from support.training import conversation

    from pipeline.contract.shards import Sample, ShardWriter, write_index

    rng, gen = random.Random(0), np.random.default_rng(0)
    with ShardWriter(out, "train", samples_per_shard=8) as writer:
        for i in range(16):
            feats = POISON if i in bad else gen.standard_normal((1, 768)).astype(np.float16)
            meta = {"key": f"s{i:05d}", "dataset": "synthetic", "source_id": f"v{i}", "media": "none",
                    "kind": "video", "window": None, "duration": 10.0, "fps": 10.0, "num_frames": 100,
                    "frame_indices": [], "frame_times": [], "events": [], "caption": "a dog.", "encoder": "random"}
            writer.write(Sample(f"s{i:05d}", feats, meta, conversation(1, rng)))
    write_index(out, writer.shards, encoder="random", num_frames=1, dim=768, manifest_hash=None)
    nan = np.full((1, 768), np.nan, dtype=np.float16).tobytes()
    found = 0
    for tar in out.glob("*.tar"):
        raw = tar.read_bytes()
        found += raw.count(POISON.tobytes())
        tar.write_bytes(raw.replace(POISON.tobytes(), nan))
    assert found == len(bad)
    return out


# --- item 3: a non-finite loss stops the run, naming the samples --------------------------------------------------


def test_nan_features_stop_the_run_naming_the_samples(data):
    bad = set(range(0, 16, 2))
    shards = poisoned_shards(data["root"] / "nan", bad)
    out = data["root"] / "nan-run"
    text = one_line_error(invoke(*args_for(cfg_for(shards, out, save_every=1)), "--token-cache", "off"))
    assert "step 1: loss is nan" in text and "NaN/inf features" in text
    named = {f"s{i:05d}" for i in bad}
    listed = text.split("NaN/inf features: ")[1].split(" (")[0].replace("\n", "").split(", ")
    assert listed and set(listed) <= named
    assert not (out / "vtl_checkpoint.json").exists() and not (out / "engine").exists()  # nothing NaN was saved


def test_a_diverged_step_says_no_feature_is_at_fault():
    import torch

    from train.errors import NonFiniteLoss
    from train.guard import StepGuard

    guard = StepGuard()
    guard.add(torch.tensor(float("inf")), torch.zeros(2, 3, 4), ["a", "b"])
    guard.add(torch.tensor(1.0), torch.zeros(2, 3, 4), ["c", "d"])
    with pytest.raises(NonFiniteLoss, match=r"samples a, b; no sample here has non-finite features"):
        guard.check(float("inf"), 7)
    guard.add(torch.tensor(1.0), torch.zeros(2, 3, 4), ["c", "d"])
    guard.check(1.0, 8)  # a finite step passes and clears the record
    assert guard.micro == []


# --- item 5: --resume never unpickles code -----------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("victim", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_planted_pickle_in_the_engine_folder_runs_nothing(data, finished, tmp_path, victim):
    import shutil

    import torch

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "vtl_checkpoint.json").unlink()  # an interrupted run at its last save
    run_config = json.loads((out / "run_config.json").read_text())
    run_config["config"]["out"] = str(out)
    (out / "run_config.json").write_text(json.dumps(run_config))
    tag = (out / "engine" / "latest").read_text().strip()
    marker = tmp_path / "pwned"
    torch.save({"module": _Payload(marker)}, out / "engine" / tag / victim)
    cfg = cfg_for(data["clean"], out, save_every=1, resume=True)
    text = one_line_error(invoke(*args_for(cfg), "--resume"))
    assert not marker.exists(), "the planted pickle ran"
    assert victim in text and "nothing in it was run" in text and "GLOBAL posix.system" in text


def test_real_engine_states_load_weights_only(finished):
    from train.safe_load import safe_load

    files = list((finished / "engine").glob("step*/*.pt"))
    assert len(files) == 2 and all(isinstance(safe_load(f), dict) for f in files)  # ZeRO-2: LossScaler, fragments


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_raw_pickle_is_refused_too(tmp_path):
    from train.safe_load import UnsafeEngineState, safe_load

    marker = tmp_path / "pwned"
    (tmp_path / "x.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafeEngineState, match="x.pt"):
        safe_load(tmp_path / "x.pt")
    assert not marker.exists()


# --- item 10: run-time refusals are one line and exit 2 ----------------------------------------------------------


def test_an_occupied_out_and_changed_options_on_resume_are_one_line(data, finished):
    cfg = cfg_for(data["clean"], finished, save_every=1)
    assert "already holds" in one_line_error(invoke(*args_for(cfg)))
    text = one_line_error(invoke(*args_for(cfg, lr=0.5), "--resume"))
    assert "changed options (lr: 0.001 → 0.5)" in text


@pytest.mark.parametrize("llm, says", [("/no/such/model", "no such model folder"),
                                       ("someorg/some-model", "hub is offline")])
def test_a_missing_llm_is_one_line_and_fast(data, tmp_path, monkeypatch, llm, says):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    text = one_line_error(invoke(*args_for(cfg_for(data["clean"], tmp_path / "o", llm=llm))))
    assert says in text and time.perf_counter() - t0 < 30 and not (tmp_path / "o").exists()


def test_an_unreachable_hub_is_said_in_seconds(data, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    text = one_line_error(invoke(*args_for(cfg_for(data["clean"], tmp_path / "o", llm="someorg/some-model"))))
    assert "cannot be reached" in text


def test_fewer_shards_than_processes_is_refused():
    from train.errors import RefusedValue
    from train.preflight import check_shards

    with pytest.raises(RefusedValue, match="2 shards cannot feed 4 processes"):
        check_shards({"shards": [{}, {}]}, 4)
    check_shards({"shards": [{}, {}]}, 2)


# --- item 10: a full disk while saving ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["engine", "final"])
def test_a_full_disk_leaves_no_partial_save(data, tmp_path, where):
    out = tmp_path / "full"
    if where == "engine":  # the first engine save writes into /dev/full: ENOSPC from inside torch.save
        target = out / "engine" / "step00000001" / "mp_rank_00_model_states.pt"
    else:
        target = out / ".vtl_checkpoint.json.tmp"  # the final checkpoint's last file
    target.parent.mkdir(parents=True)
    target.symlink_to("/dev/full")
    cfg = cfg_for(data["clean"], out, save_every=1)
    text = one_line_error(invoke(*args_for(cfg), "--token-cache", "off"))
    assert "no space left on device" in text
    assert not (out / "vtl_checkpoint.json").exists()
    if where == "engine":
        assert not (out / "engine" / "step00000001").exists() and not (out / "engine" / "latest").exists()
        assert "no earlier complete one" in text
    else:
        assert (out / "engine" / "latest").read_text().strip() == "step00000002"  # resumable from the last save


# --- item 13: a run killed before its first save, and the presets' save interval ---------------------------------


def test_a_run_killed_before_any_save_gets_one_clear_way_on(data, finished, tmp_path):
    import shutil

    from train.preflight import check_out

    out = tmp_path / "nosave"
    out.mkdir()
    shutil.copy(finished / "run_config.json", out / "run_config.json")
    shutil.copy(finished / "metrics.jsonl", out / "metrics.jsonl")
    cfg = cfg_for(data["clean"], out, save_every=1)
    text = one_line_error(invoke(*args_for(cfg), "--resume"))
    assert "stopped before its first engine save" in text and "without --resume" in text
    check_out(cfg)  # ... and that advice works: a fresh start in the same folder is allowed
    from train.checkpoint import read_checkpoint

    with pytest.raises(FileNotFoundError, match="stopped before its first save: run its vtl-train command again"):
        read_checkpoint(out)  # as --from, the same advice (it said "use --resume on it" before)


def test_every_preset_saves_for_resume():
    from train.config import load_preset, preset_path

    assert all(load_preset(preset_path(None, stage)).get("save_every") for stage in (1, 2, 3))


# --- item 12: kill -9 leaves no DataLoader worker; item 15: plain progress lines off a terminal ------------------


@pytest.mark.slow  # a training subprocess: ~25 s on an idle 2-core machine, ~60 s under load
def test_kill_9_leaves_no_worker_and_logs_plain_progress(data, tmp_path):
    import psutil

    # Long samples: the workers' prefetched batches overfill the pipe to the trainer, which is what left them
    # blocked for good after kill -9 (with short ones they happened to exit on their own).
    shards = write_training_shards(tmp_path / "long", n=32, stage=1, per_shard=8, rows=1, long_every=1)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "train.cli", *args_for(cfg_for(shards, out, max_steps=100000, save_every=1000,
                                                                num_workers=2)), "--max-tokens", "4096"]
    cmd.remove("--no-progress")  # stdout is a file here, not a terminal: plain lines
    log = tmp_path / "stdout.txt"
    with open(log, "w") as stdout:
        proc = subprocess.Popen(cmd, env={**ENV, "VTL_PROGRESS_INTERVAL": "0"}, cwd=ROOT, stdout=stdout,
                                stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the DataLoader workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"workers outlived vtl-train: {[p.pid for p in alive]}"
    lines = [x for x in log.read_text().splitlines() if x.startswith("stage 1: step ")]
    assert lines and all(k in lines[0] for k in ("loss", "tok/s", "ETA", "/100000"))


def test_plain_progress_prints_every_interval_and_the_last_step():
    from train.progress import PlainProgress

    stream = io.StringIO()
    bar = PlainProgress(total=4, start=0, label="stage 2", interval_s=3600, stream=stream)
    for step in range(1, 5):
        bar.update(step, {"loss": 1.5, "lr": 1e-4, "tokens_per_s": 100.0, "elapsed_s": step})
    lines = stream.getvalue().splitlines()
    assert [x.split(" (")[0] for x in lines] == ["stage 2: step 1/4", "stage 2: step 4/4"]
    assert "loss 1.5000 lr 1.00e-04 100 tok/s elapsed 0:00:04 ETA 0:00:00" in lines[1]


# --- item 14: the encoder id of the training shards in the checkpoint ------------------------------------------------


def test_the_checkpoint_records_the_shards_encoder_and_eval_refuses_another(finished, tmp_path):
    from support.evaluation import eval_shards

    from eval.cli import app as eval_app
    from train.checkpoint import check_encoder, read_checkpoint

    meta = read_checkpoint(finished)
    assert meta["encoder"] == "random"  # support.training's shards say encoder "random"
    check_encoder(meta, "random", "x")
    check_encoder({"encoder": None}, "other", "x")  # a checkpoint from before: nothing to compare
    with pytest.raises(ValueError, match="fast-resize"):
        check_encoder(meta, "open_clip:ViT-L-14|x|fast", "the evaluation shards")
    shards = eval_shards(tmp_path / "eval", "grounding")
    index = json.loads((shards / "index.json").read_text())
    (shards / "index.json").write_text(json.dumps({**index, "encoder": "open_clip:other"}))
    res = CliRunner().invoke(eval_app, ["grounding", "--checkpoint", str(finished), "--shards", str(shards),
                                        "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "open_clip:other" in res.output and "Traceback" not in res.output


def test_the_eval_bar_has_a_total_that_becomes_exact(tmp_path):
    from rich.console import Console
    from support.evaluation import VIDEOS, eval_shards

    from eval.progress import QueryBar

    shards = eval_shards(tmp_path / "eval", "grounding")
    queries = sum(len(ev) for _, ev in VIDEOS.values())
    with QueryBar(Console(file=io.StringIO()), "generating", shards, None) as bar:
        task = bar.bar.tasks[0]
        assert task.total == len(VIDEOS)  # before reading: one query per sample
        bar.chunk(queries, len(VIDEOS))
        bar.advance(queries)
        assert task.total == task.completed == queries
    with QueryBar(Console(file=io.StringIO()), "generating", shards, 2) as bar:
        assert bar.bar.tasks[0].total == 2  # --limit caps it


@pytest.mark.slow  # two processes under torchrun: ~30 s on 2 cores
def test_two_ranks_on_one_shard_both_stop_with_one_line(tmp_path):
    shards = write_training_shards(tmp_path / "one", n=8, stage=1, per_shard=8, rows=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29661", "-m",
           "train.cli", *args_for(cfg_for(shards, tmp_path / "o"))]
    done = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("error: 1 shards cannot feed 2 processes") == 2, done.stderr[-3000:]
    assert 'train/loop.py", line' not in done.stderr  # torchrun reports the exit codes; no trainer traceback
