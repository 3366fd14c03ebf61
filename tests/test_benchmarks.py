"""The benchmark suite's quick mode prints every row with sane figures.

No timing is asserted: these machines are shared and noisy. What is checked
is that every measurement ran and produced a positive, finite figure, and
that the kernels agreed with the C references on every value.
"""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    ("kernel, whole set", "scalar C, one core"),
    ("kernel, whole set", "AVX2 C, one core"),
    ("kernel, whole set", "scalar Numba, one core"),
    ("kernel, whole set", "fraktal kernel, one core"),
    ("kernel, boundary", "scalar C, one core"),
    ("kernel, boundary", "AVX2 C, one core"),
    ("kernel, boundary", "scalar Numba, one core"),
    ("kernel, boundary", "fraktal kernel, one core"),
    ("kernel", "packed double add/sub/mul instructions"),
    ("shortcuts, whole set", "cardioid and bulb test"),
    ("shortcuts, whole set", "periodicity check"),
    ("shortcuts, whole set", "both (the default)"),
    ("shortcuts, boundary", "cardioid and bulb test"),
    ("shortcuts, boundary", "periodicity check"),
    ("shortcuts, boundary", "both (the default)"),
    ("distribution", "chunk round trip on loopback"),
    ("distribution", "bytes on the wire per pixel, whole set"),
    ("distribution", "bytes on the wire per pixel, boundary"),
    ("distribution", "in-process kernel, one core"),
    ("distribution", "`fraktal render --workers 2`"),
    ("distribution", "CPU time of `fraktal render --workers 2`"),
    ("distribution", "time to the first finished tile"),
    ("distribution", "bytes on the wire per pixel, 128x128 deep boundary"),
    ("distribution", "dask.distributed LocalCluster"),
    ("memory", "master peak RSS"),
    ("memory", "worker peak RSS"),
    ("start-up", "`fraktal render` (default 1920x1080 view)"),
]


@pytest.fixture(scope="module")
def table():
    finished = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert finished.returncode == 0, finished.stderr
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in finished.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| area ")
    ]


@pytest.mark.slow
def test_every_measurement_is_in_the_table_once(table):
    for area, measurement in ROWS:
        found = [
            row
            for row in table
            if row[0].startswith(area) and row[1].startswith(measurement)
        ]
        assert len(found) == 1, f"{area}: {measurement} appears {len(found)} times"
    assert len(table) == len(ROWS)


@pytest.mark.slow
def test_every_figure_is_positive_and_finite(table):
    for area, measurement, figure, *_ in table:
        number = float(re.match(r"[-\d.,e+]+|nan|inf", figure).group().replace(",", ""))
        assert math.isfinite(number) and number > 0, f"{area}: {measurement}: {figure}"


@pytest.mark.slow
def test_kernels_and_c_references_agree_on_every_value(table):
    kernel_rows = [row for row in table if row[1] == "fraktal kernel, one core"]

    assert len(kernel_rows) == 2
    for row in kernel_rows:
        assert "agree on every value: yes" in row[3]


@pytest.mark.slow
def test_default_shortcuts_change_no_pixel(table):
    for row in table:
        if row[1] == "both (the default)":
            assert row[3].startswith("0 pixels changed;")
