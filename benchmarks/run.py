"""Every fraktal benchmark in one run, printed as one Markdown table.

    python benchmarks/run.py            # the full sizes (several minutes)
    python benchmarks/run.py --quick    # the same code at tiny sizes (seconds)

Builds the C references with gcc, then measures the kernel, the shortcuts,
the distribution (round trip, efficiency, wire bytes, dask), memory and
start-up. Timings on a shared machine are noisy: ratios are taken within one
run, kernel figures are best-of-N CPU time. The quick mode checks that the
code runs, not the speed.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
from pathlib import Path

import dask_job
import distribution
import footprint
import kernels
import shortcuts
from table import markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument(
        "--repeat", type=int, help="rounds of the kernel timings (default 5, quick 1)"
    )
    options = parser.parse_args()
    # The in-process master of the round trip logs its stand-in worker leaving.
    logging.basicConfig(level=logging.ERROR)
    quick = options.quick
    repeat = options.repeat or (1 if quick else 5)

    rows = kernels.measure(quick, repeat)
    rows += shortcuts.measure(quick, repeat)
    distribution_rows, render_run = distribution.measure(quick)
    rows += distribution_rows
    rows += dask_job.measure(distribution.heavy_view(quick), render_run.seconds)
    # Start-up first: the huge render of the memory test leaves gigabytes of
    # dirty pages that the kernel writes back for a while afterwards.
    start_up = footprint.start_up()
    rows += footprint.memory(quick)
    rows += start_up

    print(f"fraktal benchmarks{' (quick mode)' if quick else ''}, {_machine()}")
    print()
    print(markdown(rows))


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
