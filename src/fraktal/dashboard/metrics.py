"""The master's counters in Prometheus' text exposition format (version 0.0.4).

Counters (``_total``) come from the scheduler's `Totals` and only grow while
the master runs; gauges describe the moment of the snapshot.
"""

from __future__ import annotations

from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTERS = (
    ("tiles_done", "Tiles computed by workers and taken by the master."),
    ("pixels_done", "Pixels of the tiles taken by the master."),
    ("iterations", "Escape-time iterations computed by workers."),
    ("tiles_requeued", "Tiles put back in the queue, for any reason."),
    ("leases_expired", "Chunks whose lease ran out before a result came."),
    ("tiles_failed", "Tiles a worker reported as failed."),
    ("duplicates", "Results dropped because the tile was already done."),
)


def render_metrics(snapshot: dict[str, Any]) -> str:
    """Prometheus text for a `fraktal.master.snapshot.build` snapshot."""
    lines: list[str] = []
    for name, text in COUNTERS:
        _family(lines, f"fraktal_{name}_total", "counter", text)
        lines.append(f"fraktal_{name}_total {snapshot['totals'][name]}")

    _family(lines, "fraktal_workers_connected", "gauge", "Workers connected now.")
    lines.append(f"fraktal_workers_connected {snapshot['workers_connected']}")
    _family(lines, "fraktal_workers", "gauge", "Workers known, by status.")
    for status, count in snapshot["workers_by_status"].items():
        lines.append(f"fraktal_workers{_labels(status=status)} {count}")

    _family(lines, "fraktal_jobs", "gauge", "Jobs known, by status.")
    by_status: dict[str, int] = {}
    for job in snapshot["jobs"]:
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
    for status, count in sorted(by_status.items()):
        lines.append(f"fraktal_jobs{_labels(status=status)} {count}")

    _job_gauges(lines, snapshot["job"])
    return "\n".join(lines) + "\n"


def _job_gauges(lines: list[str], job: dict[str, Any] | None) -> None:
    _family(
        lines,
        "fraktal_job_progress_ratio",
        "gauge",
        "Share of the running job's tiles that are done, 0 to 1.",
    )
    if job is not None:
        labels = _labels(job=job["id"])
        lines.append(f"fraktal_job_progress_ratio{labels} {job['progress']}")

    _family(lines, "fraktal_job_tiles", "gauge", "Tiles of the running job, by state.")
    if job is not None:
        for state in ("pending", "leased", "done", "failed"):
            labels = _labels(job=job["id"], state=state)
            lines.append(f"fraktal_job_tiles{labels} {job['tiles'][state]}")


def _family(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def _labels(**labels: str) -> str:
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
