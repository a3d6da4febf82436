"""The local Ray that `extract` and `build-qa --executor ray` start when given no `--address`, and `get_cause`, the
`ray.get` both use where a remote failure must reach the CLI as its own exception.

It listens on 127.0.0.1 only and dies with its driver (infra.ray_watchdog); docs/reliability.md says
what was measured. Both use private Ray attributes: if a Ray upgrade moves them, Ray still starts, without the
loopback binding or the watchdog (tests/pipeline/extract/test_extract_ray_local.py then fails).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from infra import ray_watchdog

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_local_ray(num_cpus: int | None = None) -> ray_watchdog.Watchdog | None:
    """A fresh Ray on this machine (never a cluster someone else started here), bound to 127.0.0.1; its watchdog,
    which the caller keeps for the run's lifetime (None when Ray's node object could not be found)."""
    import ray

    with _loopback_only():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    node = getattr(ray._private.worker, "_global_node", None)  # private: without it, no watchdog
    return ray_watchdog.start(node.get_session_dir_path()) if node is not None else None


@contextmanager
def _loopback_only():
    """While a local Ray starts: its node address is 127.0.0.1, so gcs_server, raylet, the workers and the runtime-env
    agent listen there only. ray.init turns `_node_ip_address="127.0.0.1"` back into the machine's address unless Ray
    believes clusters are disabled (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read by `ray._private.ray_constants` at
    import; the attribute too, for a driver that imported ray already). The processes it starts inherit the variable;
    both are restored afterwards."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def get_cause(refs):
    """`ray.get(refs)`, re-raising a remote exception as itself (a ModelLoadError stays one for the CLI's message)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        raise (e.cause if isinstance(e.cause, Exception) else e.as_instanceof_cause()) from None
