"""Where an artefact came from: the producing package and the run-config file every command writes beside its output.

STYLE §7: every shard set, checkpoint and eval run carries `run_config.json` (the resolved config plus `producer()`).
`TINY_RANDOM` is the model name that means "seeded random weights built in-process" for both the CLIP encoder and the
LLM; it is recorded in encoder ids and checkpoints, so it is a contract word. It is defined once, in infra.hub, the
resolver every model option goes through, and re-exported here.
"""
from __future__ import annotations

from infra.hub import TINY_RANDOM

__all__ = ["RUN_CONFIG", "TINY_RANDOM", "producer"]

RUN_CONFIG = "run_config.json"


def producer() -> dict:
    """Who made an artefact: package name and version (stored in every index and run config)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("vtl")
    except PackageNotFoundError:
        v = "0+unknown"
    return {"name": "vtl", "version": v}
