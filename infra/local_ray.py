"""How `extract` and `build-qa --executor ray` reach Ray (`connect`): a local Ray when given no address, else the
cluster at the address; and `get_cause`, the `ray.get` both use where a remote failure must reach the CLI as its own
exception.

It listens on 127.0.0.1 only and dies with its driver (infra.ray_watchdog); docs/reliability.md says
what was measured. Both use private Ray attributes: if a Ray upgrade moves them, Ray still starts, without the
loopback binding or the watchdog (tests/pipeline/extract/test_extract_ray_local.py then fails).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from infra import ray_watchdog

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterJoinError(RuntimeError):
    """`--address` names a cluster we cannot join (nothing there, or it wants a token we do not have)."""


def connect(address: str | None = None, num_cpus: int | None = None) -> ray_watchdog.Watchdog | None:
    """Ray for this driver. Already initialised: nothing to do. No address: a fresh local Ray (`start_local_ray`;
    never a cluster someone else started here, which `ray.init()` with no address would join through /tmp/ray); its
    watchdog is returned, for the caller to keep for the run's lifetime. "auto", "HOST:PORT" or "ray://host:port":
    join that cluster, with its own resources (`num_cpus` is for a local Ray only)."""
    import ray

    if ray.is_initialized():
        return None
    if not address:
        return start_local_ray(num_cpus)
    check_address(address)
    try:
        ray.init(address=address)
    except ConnectionError as e:
        raise ClusterJoinError(f"cannot join the Ray cluster at {address}: {e}. If the cluster uses token "
                               "authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN here as on its nodes "
                               "(docs/cluster.md)") from None
    return None


def check_address(address: str, timeout: float = 5.0) -> None:
    """Before `ray.init(address=HOST:PORT)`: is anything listening, and does its GCS accept our token? Ray itself
    only says `ConnectionError` after ~20 s in both cases. Other forms (auto, ray://) are left to Ray."""
    import socket

    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise ClusterJoinError(f"no Ray cluster answers at {address} ({e}); start one with `ray start --head` "
                               "and pass its GCS address (HOST:6379 by default)") from None
    import ray

    try:
        from ray._raylet import GcsClient  # a private API: if it moves, ray.init below still reports the failure

        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        raise ClusterJoinError(f"the Ray cluster at {address} refused us: it uses token authentication. Set "
                               "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                               "~/.ray/auth_token) in this shell, as on the cluster's nodes (docs/cluster.md)") from None
    except Exception:  # noqa: BLE001  (anything else: let ray.init try and report)
        return


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
