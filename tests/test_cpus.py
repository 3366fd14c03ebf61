"""How many processes a worker starts: affinity and cgroup quotas, not the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fraktal.master.picture import Output
from fraktal.render.spec import make_spec
from fraktal.worker.cpus import cgroup_quota, usable_cpus
from netlab import skip_or_fail


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


CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuCgroup:
    """A cgroup of our own with a CPU quota, v1 (cpu controller) or v2."""

    def __init__(self, cpus: float) -> None:
        name = f"fraktal-test-{uuid.uuid4().hex[:8]}"
        v1 = [
            CGROUP_ROOT / mount
            for mount in ("cpu", "cpu,cpuacct")
            if (CGROUP_ROOT / mount / "cpu.cfs_quota_us").exists()
        ]
        self.path = (v1[0] if v1 else CGROUP_ROOT) / name
        self.path.mkdir()
        try:
            self._limit(cpus, v1=bool(v1))
        except OSError:
            self.path.rmdir()
            raise

    def _limit(self, cpus: float, v1: bool) -> None:
        if v1:
            period = int((self.path / "cpu.cfs_period_us").read_text())
            (self.path / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
        else:
            (self.path / "cpu.max").write_text(f"{int(cpus * 100_000)} 100000")

    def command(self, *argv: str) -> list[str]:
        """``argv`` started inside this cgroup (the shell joins it, then execs)."""
        join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["sh", "-c", join, str(self.path), *argv]

    def remove(self) -> None:
        # The group can go once its last process has exited.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def one_cpu_cgroup():
    if os.geteuid() != 0:
        skip_or_fail("making a cgroup needs root", "FRAKTAL_REQUIRE_CGROUP")
    try:
        group = CpuCgroup(1.0)
    except OSError as exc:
        skip_or_fail(
            f"cannot make a cgroup with a CPU quota: {exc}", "FRAKTAL_REQUIRE_CGROUP"
        )
    yield group
    group.remove()


def pool_processes(pid: int) -> list[int]:
    """Children of ``pid`` that are pool processes (not the resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            found.append(int(child))
    return found


@pytest.mark.slow
@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2,
    reason="needs 2 CPUs to tell a 1-CPU quota from the machine",
)
def test_a_worker_under_a_one_cpu_quota_starts_one_process(
    one_cpu_cgroup, start_master
):
    running = start_master()
    running.master.submit(
        make_spec(
            width=640,
            height=400,
            span=0.02,
            center_re=-0.7436,
            center_im=0.1318,
            max_iter=20_000,
            tile_size=32,
        ),
        Output(png=None),
    )
    command = one_cpu_cgroup.command(
        sys.executable,
        "-m",
        "fraktal",
        "worker",
        "--master",
        f"127.0.0.1:{running.port}",
        "--name",
        "quota",
    )
    worker = subprocess.Popen(command, start_new_session=True)
    try:
        running.wait_for(
            lambda: any(
                w.name == "quota" and w.tiles_done > 0
                for w in running.master.scheduler.workers.values()
            ),
            what="the worker in the cgroup to deliver tiles",
        )
        record = next(
            w for w in running.master.scheduler.workers.values() if w.name == "quota"
        )
        assert record.processes == 1
        assert len(pool_processes(worker.pid)) == 1
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
