"""`vtl-train --stage 1|2|3`: thin CLI over `train.loop.run` (options map 1:1 to `train.config.TrainConfig`)."""
from __future__ import annotations

from typing import Optional

import typer

from infra.usage import fail

app = typer.Typer(help="Train a time-aware video LLM (VTimeLLM recipe), stage 1, 2 or 3.", add_completion=False,
                  pretty_exceptions_enable=False)


@app.command()
def train(
    stage: int = typer.Option(..., "--stage", help="Training stage: 1 projector, 2 LoRA, 3 merged LoRA + new LoRA."),
    shards: str = typer.Option(..., "--shards", help="Training shard folder (index.json + tars from build-qa)."),
    llm: str = typer.Option(..., "--llm", help="Base LLM: local HF folder, hub name, or tiny-random."),
    out: str = typer.Option(..., "--out", help="Checkpoint folder to write."),
    from_checkpoint: Optional[str] = typer.Option(None, "--from", help="Previous stage's checkpoint (stages 2, 3)."),
    preset: Optional[str] = typer.Option(None, help="Preset YAML (path or name); default: presets/stage{N}.yaml."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimizer steps (default: from epochs)."),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue a killed run from out/engine/ (same "
                                          "options)."),
    micro_batch: Optional[int] = typer.Option(None, help="Samples per forward pass per process."),
    global_batch: Optional[int] = typer.Option(None, help="Samples per optimizer step, all processes (128)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the shards."),
    warmup_ratio: Optional[float] = typer.Option(None, help="Share of steps warming up the learning rate."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay."),
    grad_clip: Optional[float] = typer.Option(None, help="Gradient norm clip (0 = off)."),
    zero: Optional[int] = typer.Option(None, help="DeepSpeed ZeRO stage 0-3."),
    precision: Optional[str] = typer.Option(None, help="auto (bf16 on GPU, fp32 on CPU), bf16 or fp32."),
    engine: Optional[str] = typer.Option(None, help="deepspeed (default) or torch (one process)."),
    attn: Optional[str] = typer.Option(None, help="auto, sdpa, eager or flash_attention_2."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                          help="Recompute activations in backward."),
    conv_format: Optional[str] = typer.Option(None, help="plain, v1, chatglm3 or chat_template (default: stage's)."),
    max_tokens: Optional[int] = typer.Option(None, help="Longest sample (tokens + feature rows); longer are skipped."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank."),
    lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha."),
    lora_dropout: Optional[float] = typer.Option(None, help="LoRA dropout."),
    num_workers: Optional[int] = typer.Option(None, help="DataLoader workers per process."),
    shuffle_buffer: Optional[int] = typer.Option(None, help="Shuffle buffer size (samples) per worker."),
    group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length",
                                                   help="Group micro-batches by length (default on)."),
    pack: Optional[bool] = typer.Option(None, "--pack/--no-pack", help="Pack each micro-batch into one sequence."),
    token_cache: Optional[str] = typer.Option(None, help="Token-table cache folder (default: OUT/token-cache; off = none)."),
    seed: Optional[int] = typer.Option(None, help="Seed for init, shard order, shuffling, dropout."),
    save_every: Optional[int] = typer.Option(None, help="Engine checkpoint every N steps (for --resume)."),
    log_keys: Optional[bool] = typer.Option(None, "--log-keys", help="Write each rank's sample keys to "
                                            "out/keys.rank{R}.jsonl."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show the progress bar."),
    local_rank: Optional[int] = typer.Option(None, "--local_rank", "--local-rank", hidden=True,
                                             help="Set by the deepspeed launcher (ranks come from the environment)."),
) -> None:
    """Train one stage; world size and ranks come from the launcher (torchrun or deepspeed)."""
    import logging
    import warnings

    from train.config import resolve_config

    flags = {k: v for k, v in locals().items()
             if k not in ("stage", "local_rank", "logging", "warnings", "resolve_config")}
    try:
        cfg = resolve_config(stage, **flags)
    except (ValueError, FileNotFoundError) as err:  # a wrong option: say which, without a traceback
        fail(err)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("train").setLevel(logging.INFO)
    # DeepSpeed calls torch collectives that torch has renamed; the warning repeats every step and means nothing here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    from train.errors import Refused
    from train.preflight import check_llm

    try:
        check_llm(cfg)  # before torch is imported: an LLM that no hub can give is one line in seconds
        from train.loop import run

        run(cfg)
    except Refused as err:  # a run-time refusal (occupied --out, missing --llm, NaN loss, full disk): one line
        fail(err)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
