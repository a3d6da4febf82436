"""Run under torchrun by tests/train/test_zero3_init.py: prepare one stage's model as `train.loop.run` does under ZeRO-3
(inside `partitioned_build`, before `deepspeed.initialize`) and report, per rank, how its parameters are held.

`python zero3_probe.py REPORT_DIR CASES_JSON`: CASES_JSON maps a case name to `resolve_config(stage, **rest)`
arguments; the cases are prepared in turn. Per case, each rank writes `NAME.rank{R}.json` (per parameter: DeepSpeed
id present, local numel, partition numel, full numel; and whether the ZeRO-3 flag was on inside and off after the
block); rank 0 also writes `NAME.safetensors`, the whole weights gathered one parameter at a time, for comparison
with an unpartitioned build.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(report_dir: str, cases: str) -> None:
    from train.engine import init_distributed

    rank, world, _ = init_distributed()
    for name, options in json.loads(cases).items():
        probe(Path(report_dir), name, options, rank, world)


def probe(report_dir: Path, name: str, options: dict, rank: int, world: int) -> None:
    import deepspeed
    import torch
    from safetensors.torch import save_file
    from transformers.integrations import is_deepspeed_zero3_enabled

    from train.config import resolve_config
    from train.engine import resolve_precision
    from train.stages import prepare_model
    from train.zero3 import partitioned_build

    cfg = resolve_config(options.pop("stage"), world_size=world, **options)
    with partitioned_build(cfg, resolve_precision(cfg.precision)):
        flag_inside = is_deepspeed_zero3_enabled()
        model = prepare_model(cfg)
    params = {n: {"ds_id": hasattr(p, "ds_id"), "local": p.numel(),
                  "partition": p.ds_tensor.numel() if hasattr(p, "ds_id") else None,
                  "full": p.ds_numel if hasattr(p, "ds_id") else p.numel()}
              for n, p in model.named_parameters()}
    report = {"world": world, "flag_inside": flag_inside, "flag_after": is_deepspeed_zero3_enabled(),
              "params": params}
    (report_dir / f"{name}.rank{rank}.json").write_text(json.dumps(report))
    whole = {}
    for n, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            if rank == 0:
                whole[n] = p.detach().clone().contiguous()
    if rank == 0:
        save_file(whole, str(report_dir / f"{name}.safetensors"))
    torch.distributed.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:3])
