"""Peak memory and CPU of a process tree (a driver and the local Ray it started), for bench/bench_extract.py.

Summed RSS counts every page once per process that maps it: the torch libraries every worker loads, and the object
store's shared pages each process touched. Summed PSS splits each shared page between the processes mapping it, so
it is the tree's real footprint; both are reported. Both come from /proc/PID/smaps_rollup (one kernel summary per
process, cheap enough to read every half second on 2 cores). Not a test.
"""
from __future__ import annotations

import threading


def rollup(pid: int) -> dict[str, float]:
    """The MB fields of /proc/PID/smaps_rollup (Rss, Pss, Pss_Anon, Pss_Shmem, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) / 1024
    return out


def _name(p) -> str:
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001  (gone already)
        return "?"
    title = cmd[0] if cmd else p.name()
    return title.split()[0].rsplit("/", 1)[-1][:40] if not title.startswith("ray::") else title.split()[0]


class TreeSampler(threading.Thread):
    """Samples this process and all its descendants every `interval` s: peak summed RSS and PSS (MB), each process's
    peak PSS with its last name (Ray workers rename themselves after what they run), CPU seconds used."""

    def __init__(self, interval: float = 0.5, skip: frozenset[int] = frozenset()):
        super().__init__(daemon=True)
        self.interval, self.skip = interval, skip  # skip: bench fixtures in the tree (the moto S3 server)
        self.peak_rss = self.peak_pss = 0.0
        self.stop = threading.Event()
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.by_pid: dict[int, tuple[float, str]] = {}

    def sample(self, first: bool = False) -> None:
        import psutil

        me = psutil.Process()
        rss = pss = 0.0
        for p in [me] + me.children(recursive=True):
            if p.pid in self.skip:
                continue
            try:
                mem, cpu, name = rollup(p.pid), p.cpu_times(), _name(p)
            except (OSError, psutil.Error):
                continue
            rss, pss = rss + mem.get("Rss", 0.0), pss + mem.get("Pss", 0.0)
            peak = max(self.by_pid.get(p.pid, (0.0, ""))[0], mem.get("Pss", 0.0))
            self.by_pid[p.pid] = (peak, name if name not in ("?", "ray::IDLE") else self.by_pid.get(p.pid, (0, name))[1])
            (self.cpu_start if first else self.cpu_last)[p.pid] = cpu.user + cpu.system
            self.cpu_start.setdefault(p.pid, 0.0)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def cpu_seconds(self) -> float:
        """CPU time used during the run by the tree (a process that exited counts until its last sample)."""
        return sum(max(self.cpu_last.get(pid, t0) - t0, 0.0) for pid, t0 in self.cpu_start.items())

    def biggest(self, n: int = 6) -> str:
        top = sorted(self.by_pid.values(), reverse=True)[:n]
        return ", ".join(f"{name} {pss:.0f}" for pss, name in top)

    def run(self) -> None:
        self.sample(first=True)
        while not self.stop.wait(self.interval):
            self.sample()

    def finish(self) -> "TreeSampler":
        self.stop.set()
        self.join()
        self.sample()
        return self
