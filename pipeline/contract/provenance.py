"""Where an artefact came from: the producing package and the run-config file every command writes beside its output.

STYLE §7: every shard set, checkpoint and eval run carries `run_config.json` (the resolved config plus `producer()`).
`TINY_RANDOM` is the model name that means "seeded random weights built in-process" for both the CLIP encoder and the
LLM; it is recorded in encoder ids and checkpoints, so it is a contract word, defined here once.
"""
from __future__ import annotations

RUN_CONFIG = "run_config.json"
TINY_RANDOM = "tiny-random"


def producer() -> dict:
    """Who made an artefact: package name and version (stored in every index and run config)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("vtl")
    except PackageNotFoundError:
        v = "0+unknown"
    return {"name": "vtl", "version": v}
