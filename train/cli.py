"""`vtl-train --stage 1|2|3`: thin CLI over `train.loop.run`; its options are generated from `train.config.TrainConfig`
(infra.options), whose defaults are fallbacks under the stage preset, so `--help` does not show them."""
from __future__ import annotations

import typer

from infra.options import flag, options
from infra.usage import fail, strict_command_class
from train.config import TrainConfig

app = typer.Typer(help="Train a time-aware video LLM (VTimeLLM recipe), stage 1, 2 or 3.", add_completion=False,
                  pretty_exceptions_enable=False)
SWITCH = flag(switch=True)
LAUNCHER = {"local_rank": flag("--local_rank", "--local-rank", type=int, hidden=True,
                               help="Set by the deepspeed launcher (ranks come from the environment).")}


@app.command(cls=strict_command_class())
@options(TrainConfig, skip=("world_size",), extra=LAUNCHER, show_defaults=False, flags={
    "from_checkpoint": flag("--from"), **dict.fromkeys(("gradient_checkpointing", "group_by_length", "pack",
                                                         "progress"), SWITCH)})
def train(given: dict) -> None:
    """Train one stage; world size and ranks come from the launcher (torchrun or deepspeed)."""
    import logging
    import warnings

    from train.config import resolve_config

    given.pop("local_rank", None)
    try:
        cfg = resolve_config(given.pop("stage"), **given)
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
