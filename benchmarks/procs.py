"""Peak resident memory of a process tree, sampled from /proc while it runs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from app.processes import child_pids


def _rss_kib(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return cmdline.strip(), int(line.split()[1])
    return None


class PeakRss:
    """Samples every process under `root` every `interval` seconds; keeps each one's peak."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            stack = [self.root]
            while stack:
                pid = stack.pop()
                sample = _rss_kib(pid)
                if sample is not None:
                    name, rss = sample
                    if rss > self.peaks.get(pid, ("", 0))[1]:
                        self.peaks[pid] = (name, rss)
                stack.extend(child_pids(pid))
            self._stop.wait(self.interval)

    def report(self) -> list[dict[str, object]]:
        return [
            {"pid": pid, "command": _short(name), "peak_rss_mib": round(rss / 1024, 1)}
            for pid, (name, rss) in sorted(self.peaks.items())
        ]


def _short(cmdline: str) -> str:
    for marker in ("-Q cpu", "-Q gpu"):
        if marker in cmdline:
            return f"celery worker {marker[3:]}"
    return cmdline[:80]


def self_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and every descendant, live or ended: each live
    process's own time plus what its ended (waited-for) children used (utime, stime,
    cutime, cstime of /proc/PID/stat). Deltas of two readings are the tree's CPU between."""
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        stack.extend(child_pids(pid))
    return total / _TICKS
