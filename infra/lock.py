"""One run per output folder at a time: `extract`, `build-qa` and `vtl-train` hold a lock file in their `--out`.

The run holds `OUT/<name>` (`.extract.lock`, `.build-qa.lock`, `.train.lock`), created exclusively and naming its
holder (host, pid, start, a random token). Another run on the same folder is refused with one line naming the holder.

Local folders: the lock file is created with O_CREAT | O_EXCL. A lock whose process is gone (kill -9, a crash) on
this host is stale and taken over, so the resume-after-kill path keeps working; a lock held from another host cannot
be checked and is reported with the command that removes it.

Object stores (`s3://`): the lock object is created with a conditional PUT (`If-None-Match: *`, s3fs's
`mode="create"`: AWS S3, MinIO and moto refuse it with 412 when the object exists). The holder rewrites its
`heartbeat` every `heartbeat_s` seconds; a lock from another host whose heartbeat is older than `stale_s` is taken
over (a driver killed with -9 on another machine), one from this host as soon as its pid is gone. Taking over a stale
lock is a delete then a conditional create: two runs taking over the same stale lock at the same instant could both
pass (S3 has no conditional delete here). A store that does not understand the conditional PUT would let a second
create overwrite the first: use one that does, or one run per prefix.

The lease. A failed heartbeat (an endpoint outage: botocore's connection errors are not OSErrors) is retried at the
next beat, so an outage shorter than `stale_s` costs nothing. A holder that has not beaten for `stale_s`, or finds
the lock object gone or naming another run, has lost its lease (another host may be writing by now): the heartbeat
interrupts the main thread, and the `with run_lock(...)` block ends with `LeaseLost`, so the run stops writing.
"""
from __future__ import annotations

import _thread
import json
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from infra import storage

HEARTBEAT_S = 30.0
"""How often the holder of an object-store lock rewrites its heartbeat."""
STALE_S = 120.0
"""An object-store lock from another host with no heartbeat for this long is taken over (hosts' clocks must agree
to well within this); a holder that could not beat for this long stops."""


class RunLocked(OSError):
    """Another run holds the output folder (an OSError, as EBUSY is: commands report it as an unusable --out)."""


class LeaseLost(RunLocked):
    """This run's object-store lock went stale or was taken over while it ran; it stopped writing."""


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time()}


def _pid_alive(holder: dict) -> bool:
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


def _alive(holder: dict, stale_s: float | None = None) -> bool:
    """Is the holder still running? `stale_s` None: a local lock (another host's cannot be checked)."""
    if holder.get("host") == socket.gethostname():
        return _pid_alive(holder)
    if stale_s is None:
        return True
    beat = holder.get("heartbeat")
    return not isinstance(beat, (int, float)) or time.time() - beat < stale_s


def _refusal(folder: str, holder: dict, lock: str, what: str) -> RunLocked:
    return RunLocked(f"{folder} is being written by another {what} run (host {holder.get('host')}, pid "
                     f"{holder.get('pid')}, since {holder.get('started')}); wait for it or use another --out "
                     f"(if no run is active: rm {lock})")


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # half-written by a run killed between create and write: stale


def _acquire(path: str, what: str) -> dict:
    me = _me()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder and _alive(holder):
                raise _refusal(os.path.dirname(path), holder, path, what) from None
            os.unlink(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise RunLocked(f"{path}: could not take the run lock (other runs keep starting on this folder)")


def _remote_holder(url: str) -> dict | None:
    """The lock object's holder; None when there is no lock object, {} when it does not parse (stale)."""
    try:
        holder = json.loads(storage.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(fs, path: str, url: str, data: bytes) -> None:
    """Create the object only if it does not exist (raises FileExistsError). A filesystem without a conditional
    create (its pipe_file has no `mode`) gets check-then-write: it refuses a live holder but does not close the race."""
    try:
        fs.pipe_file(path, data, mode="create")
    except (TypeError, NotImplementedError):
        if _remote_holder(url) is not None:
            raise FileExistsError(url) from None
        fs.pipe_file(path, data)


def _acquire_remote(url: str, what: str, stale_s: float) -> dict:
    fs, path = storage.filesystem(url)
    me = _me()
    for _ in range(3):
        try:
            _create(fs, path, url, json.dumps(me).encode())
            return me
        except FileExistsError:
            holder = _remote_holder(url)
            if holder is None:
                continue  # released between our create and our read
            if holder and _alive(holder, stale_s):
                raise _refusal(storage.parent(url), holder, url, what) from None
            storage.remove(url)  # stale: no heartbeat for stale_s, or its process on this host is gone
    raise RunLocked(f"{url}: could not take the run lock (other runs keep starting on this prefix)")


class Lease:
    """What a `run_lock` block holds: `lost` says why the lease was lost (None while held); `check()` raises then."""

    def __init__(self, url: str) -> None:
        self.url, self.lost = url, None

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)


class _Heartbeat(threading.Thread):
    """Rewrites the lock object's heartbeat every `interval` s while the run holds it (module docstring: the lease)."""

    def __init__(self, lease: Lease, me: dict, interval: float, stale_s: float, interrupt: bool):
        super().__init__(name="vtl-lock-heartbeat", daemon=True)
        self.lease, self.me, self.interval, self.stale_s, self.interrupt = lease, me, interval, stale_s, interrupt
        self.stopped = threading.Event()

    def run(self) -> None:
        last_beat = time.monotonic()
        while not self.stopped.wait(self.interval):
            try:
                holder = _remote_holder(self.lease.url)
                if not holder or holder.get("token") != self.me["token"]:
                    return self._lose(f"the run lock {self.lease.url} was taken over by host {(holder or {}).get('host')}"
                                      f", pid {(holder or {}).get('pid')} (this run stalled, or the lock was removed)")
                self.me["heartbeat"] = time.time()
                storage.write_bytes_atomic(self.lease.url, json.dumps(self.me).encode())
                last_beat = time.monotonic()
            except Exception as err:  # noqa: BLE001 (an outage: botocore's errors are no OSErrors) retried next beat
                if time.monotonic() - last_beat >= self.stale_s:
                    return self._lose(f"the run lock {self.lease.url} could not be renewed for {self.stale_s:.0f} s "
                                      f"({type(err).__name__}: {err}); another run may have taken the folder over")

    def _lose(self, why: str) -> None:
        if self.stopped.is_set():
            return  # the run is ending anyway
        self.lease.lost = f"{why}; this run stopped writing: rerun it once no other run uses the folder"
        if not self.interrupt:
            return
        # The run's writes happen in the main thread: stop them now. A real SIGINT also wakes a sleep or a blocking
        # call there (interrupt_main alone waits for the next bytecode); when the run handles SIGINT itself, that
        # handler is left alone and only the interrupt is simulated.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            _thread.interrupt_main()


@contextmanager
def _remote_lock(url: str, what: str, heartbeat_s: float, stale_s: float):
    me = _acquire_remote(url, what, stale_s)
    lease = Lease(url)
    beat = _Heartbeat(lease, me, heartbeat_s, stale_s, threading.current_thread() is threading.main_thread())
    beat.start()
    try:
        yield lease
    except KeyboardInterrupt:
        if lease.lost:
            raise LeaseLost(lease.lost) from None
        raise
    finally:
        beat.stopped.set()
        try:
            beat.join()
        except KeyboardInterrupt:  # the heartbeat's interrupt, arriving once the block had ended
            if not lease.lost:
                raise
        if not lease.lost:
            try:
                holder = _remote_holder(url)
                if holder and holder.get("token") == me["token"]:
                    storage.remove(url)
            except Exception:  # noqa: BLE001 (the store is down at the end: the lock goes stale after stale_s)
                pass
    lease.check()  # lost in the block's last moments, before any interrupt arrived


@contextmanager
def run_lock(out_dir: str, name: str, what: str, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
    """Hold `out_dir/name` for the duration of a run (local folder or object-store prefix); yields a `Lease`.

    `what` names the kind of run in the refusal ("another extract run")."""
    if storage.is_remote(out_dir):
        with _remote_lock(storage.join(out_dir, name), what, heartbeat_s, stale_s) as lease:
            yield lease
        return
    folder = storage.local_path(out_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    me = _acquire(path, what)
    try:
        yield Lease(path)
    finally:
        if _holder(path) == me:
            os.unlink(path)
