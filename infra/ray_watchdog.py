"""The local Ray of an extract or build-qa run dies with its driver, however the driver ends (kill -9 included).

`ray.init()` starts gcs_server, raylet and its helpers as children of the driver; Ray asks the kernel to kill the
first ones when the driver dies (PR_SET_PDEATHSIG), and the workers then exit on their own within seconds, but the
raylet's agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) were found alive 20 s (and indefinitely) after a
kill -9 of the driver. So the driver starts this watchdog in its own session: it holds the read end of a pipe whose
write end only the driver has (not inherited by Ray's processes), notes the driver's descendants every second, and
when the pipe reaches end-of-file (the driver is gone) it SIGKILLs every noted process still alive and every
process whose command line names the Ray session folder. It touches nothing while the driver lives.

Run as `python -m infra.ray_watchdog DRIVER_PID SESSION_DIR` with the pipe on stdin (`start`).
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass

SNAPSHOT_S = 1.0
"""How often the watchdog notes the driver's descendants."""


@dataclass(frozen=True)
class Watchdog:
    process: subprocess.Popen
    pipe: int
    """The write end, held open for the driver's lifetime; the kernel closes it when the driver dies."""


def start(session_dir: str) -> Watchdog:
    """Start the watchdog for this process (the driver) and the Ray session in `session_dir`."""
    read_end, write_end = os.pipe()  # both non-inheritable: Ray's later children never hold the write end
    try:
        proc = subprocess.Popen([sys.executable, "-m", "infra.ray_watchdog", str(os.getpid()),
                                 session_dir], stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(read_end)
    return Watchdog(proc, write_end)


def _is_ray(cmdline: list[str], session: str) -> bool:
    """Ray's workers and agents retitle themselves `ray::...`; its daemons name the session in an option
    (--session-dir=..., --session-name=...). Nothing else the driver started is touched."""
    return bool(cmdline) and (cmdline[0].startswith("ray::") or any(a.startswith("--") and session in a
                                                                     for a in cmdline))


def _descendants(pid: int, session: str) -> dict[int, float]:
    import psutil

    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for p in children:
        try:
            if p.pid != os.getpid() and _is_ray(p.cmdline(), session):
                found[p.pid] = p.create_time()
        except psutil.Error:
            continue
    return found


def _of_session(session: str) -> dict[int, float]:
    import psutil

    found = {}
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = p.info["cmdline"] or []
        if p.pid != os.getpid() and any(a.startswith("--") and session in a for a in cmdline):
            found[p.pid] = p.info["create_time"]
    return found


def _kill(procs: dict[int, float]) -> list:
    """SIGKILL each process that is still the one noted (same pid and start time)."""
    import psutil

    killed = []
    for pid, created in procs.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:
                p.kill()
                killed.append(p)
        except psutil.Error:
            continue
    return killed


def watch(driver: int, session_dir: str) -> None:
    import psutil

    session = os.path.basename(session_dir.rstrip("/"))
    # At once, before the first wait: Ray's agents started during ray.init retitle themselves (`ray::DashboardAgent`),
    # so once the driver is gone only this snapshot finds them (a driver killed within a second left them alive).
    noted: dict[int, float] = _descendants(driver, session)
    while True:
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], SNAPSHOT_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # end of file: the driver's write end is closed, the driver is gone
        noted.update(_descendants(driver, session))
    for _ in range(2):  # a second pass catches a worker a dying raylet started during the first
        psutil.wait_procs(_kill({**noted, **_of_session(session)}), timeout=3)
        time.sleep(0.5)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
