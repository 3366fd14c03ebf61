"""How many processes a worker starts: affinity and cgroup quotas, not the host."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fraktal.worker.cpus import cgroup_quota, usable_cpus


def fake_root(tmp_path, cgroup_lines, files):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("\n".join(cgroup_lines) + "\n")
    for path, text in files.items():
        target = tmp_path / "sys/fs/cgroup" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path


def test_cgroup_v2_quota_of_one_and_a_half_cpus_rounds_up_to_two(tmp_path):
    root = fake_root(
        tmp_path,
        ["0::/docker/abc"],
        {"docker/abc/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"},
    )
    assert cgroup_quota(root) == 1.5
    assert usable_cpus(root) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_tightest_ancestor_wins(tmp_path):
    root = fake_root(
        tmp_path,
        ["0::/a/b"],
        {"a/b/cpu.max": "max 100000", "a/cpu.max": "100000 100000"},
    )
    assert cgroup_quota(root) == 1.0
    assert usable_cpus(root) == 1


def test_cgroup_v1_quota(tmp_path):
    root = fake_root(
        tmp_path,
        ["4:cpu,cpuacct:/job", "3:memory:/job"],
        {
            "cpu,cpuacct/job/cpu.cfs_quota_us": "50000",
            "cpu,cpuacct/job/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_quota(root) == 0.5
    assert usable_cpus(root) == 1


def test_no_quota_means_the_affinity_mask(tmp_path):
    root = fake_root(tmp_path, ["0::/"], {"cpu.max": "max 100000"})
    assert cgroup_quota(root) is None
    assert usable_cpus(root) == len(os.sched_getaffinity(0))


def test_a_worker_pinned_to_one_cpu_starts_one_process():
    code = "from fraktal.worker.cpus import usable_cpus; print(usable_cpus())"
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "1"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_unpinned_process_sees_every_cpu_it_may_use():
    assert usable_cpus() == len(os.sched_getaffinity(0))
