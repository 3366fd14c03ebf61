"""How many CPUs this process may really use.

The host's core count is the wrong answer inside a container or under
`taskset`: a container limited with ``cpus: 1.5`` on a 64-core host still sees
64 cores. The answer is the smallest of the CPU affinity mask and the CPU
quota of every cgroup from ours up to the root (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus(root: Path = Path("/")) -> int:
    """CPUs this process may use; ``root`` lets tests supply a fake /proc, /sys."""
    counts = [_affinity()]
    quota = cgroup_quota(root)
    if quota is not None:
        counts.append(max(1, math.ceil(quota)))
    return max(1, min(counts))


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(root: Path = Path("/")) -> float | None:
    """The tightest CPU quota (in CPUs) over our cgroups, or None if unlimited."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            quotas += _v2_quotas(root / "sys/fs/cgroup", path)
        elif "cpu" in controllers.split(","):
            quotas += _v1_quotas(root / "sys/fs/cgroup", controllers, path)
    return min(quotas, default=None)


def _ancestors(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quotas(base: Path, path: str) -> list[float]:
    quotas = []
    for folder in _ancestors(base, path):
        try:
            quota, period = (folder / "cpu.max").read_text().split()
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            quotas.append(float(quota) / float(period))
    return quotas


def _v1_quotas(base: Path, controllers: str, path: str) -> list[float]:
    for mount in (base / controllers, base / "cpu,cpuacct", base / "cpu"):
        if mount.is_dir():
            break
    else:
        return []
    quotas = []
    for folder in _ancestors(mount, path):
        try:
            quota = float((folder / "cpu.cfs_quota_us").read_text())
            period = float((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            quotas.append(quota / period)
    return quotas
