"""The chain a user runs with a new backbone, through the console commands' apps: vtl-train stages 1 → 2 → 3 (two
steps each, a preset with its steps and batch overridden small, no DeepSpeed), `vtl-eval grounding` on tiny eval
shards and `vtl-chat --question` on a generated video. The shards carry the tiny-random CLIP's encoder id and 100
frames, so the checkpoints' feature spec is the one the eval shards and vtl-chat's extractor give."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from support.evaluation import eval_shards
from support.training import write_training_shards
from typer.testing import CliRunner

SMALL = ["--engine", "torch", "--zero", "0", "--max-steps", "2", "--micro-batch", "2", "--global-batch", "2",
         "--num-workers", "1", "--shuffle-buffer", "4", "--no-progress", "--no-gradient-checkpointing",
         "--lora-r", "4", "--lora-alpha", "8", "--save-every", "100"]


def tiny_clip_encoder() -> str:
    from pipeline.extract.clip import ClipConfig, encoder_id

    return encoder_id(ClipConfig(model="tiny-random"))


def _retag(shards: Path) -> Path:
    """Name the tiny-random CLIP as the shards' encoder (the features stay random: only the ids are compared)."""
    index = json.loads((shards / "index.json").read_text())
    index["encoder"] = tiny_clip_encoder()
    (shards / "index.json").write_text(json.dumps(index))
    return shards


def invoke(app, args: list) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (args, res.output, res.exception)
    return res.output


def train_stages(tmp: Path, llm: str, presets: list[str | None], conv_format: str | None = None) -> list[Path]:
    """Checkpoints of stages 1, 2(, 3), one per preset; each stage's metrics.jsonl has two positive losses."""
    from train.cli import app

    ckpts: list[Path] = []
    for stage, preset in zip((1, 2, 3), presets):
        shards = _retag(write_training_shards(tmp / f"shards{stage}", n=4, stage=stage, per_shard=4, rows=100,
                                              seed=stage))
        args = ["--stage", stage, "--shards", shards, "--out", tmp / f"ckpt{stage}", "--llm", llm, *SMALL]
        args += ["--from", ckpts[-1]] if ckpts else []
        args += ["--preset", preset] if preset else []
        args += ["--conv-format", conv_format] if conv_format and stage > 1 else []
        invoke(app, args)
        ckpts.append(tmp / f"ckpt{stage}")
        rows = [json.loads(line) for line in (ckpts[-1] / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows), rows
    return ckpts


def evaluate(tmp: Path, ckpt: Path) -> list[dict]:
    """`vtl-eval grounding` on three videos; the predictions, one per query."""
    from eval.cli import app

    shards = _retag(eval_shards(tmp / "eval-shards", "grounding"))
    invoke(app, ["grounding", "--checkpoint", ckpt, "--shards", shards, "--out", tmp / "eval", "--batch-size", "2",
                 "--max-new-tokens", "8"])
    preds = [json.loads(line) for line in (tmp / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert preds and (tmp / "eval" / "metrics.json").is_file()
    return preds


def chat(tmp: Path, ckpt: Path, question: str = "When does the square move?") -> str:
    """`vtl-chat VIDEO --question Q` with the tiny-random CLIP; the answer line."""
    from eval.chat_cli import app
    from pipeline.synth.media import write_video

    frames = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    for i in range(20):
        frames[i, 16:32, 2 * i:2 * i + 16] = 255
    video = write_video(tmp / "clip.mp4", frames, fps=10.0)
    out = invoke(app, [video, "--checkpoint", ckpt, "--clip-model", "tiny-random", "--question", question,
                       "--max-new-tokens", "8"])
    answers = [line for line in out.splitlines() if line.startswith("model> ")]
    assert len(answers) == 1, out
    return answers[0]
