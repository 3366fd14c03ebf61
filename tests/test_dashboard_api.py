"""The dashboard's HTTP interface through Flask's test client.

The master here is real but not serving TCP: jobs are submitted and cancelled
through it, and tiles are computed in the test and handed to the master's
own result path, as a worker's results would be.
"""

from __future__ import annotations

import asyncio
import io
import re

import numpy as np
import pytest
from PIL import Image

from fraktal.cli import main
from fraktal.dashboard.app import PngCache, create_app
from fraktal.master.service import Master, MasterConfig
from fraktal.protocol.codec import encode_tile
from fraktal.protocol.messages import Result, TileData
from fraktal.render.compute import compute_rect, render
from fraktal.render.palette import colourize
from fraktal.render.preview import BACKGROUND
from fraktal.render.spec import make_spec

TOKEN = "correct horse battery staple"
# 3 x 2 tiles of 32 x 32 pixels
JOB = {"size": "96x64", "center": "-0.5,0", "span": 3, "max_iter": 100, "tile_size": 32}
SPEC = make_spec(
    width=96, height=64, center_re=-0.5, span=3.0, max_iter=100, tile_size=32
)


@pytest.fixture
def master(tmp_path):
    return Master(MasterConfig(jobs_dir=tmp_path / "jobs"))


@pytest.fixture
def client(master):
    return create_app(master).test_client()


@pytest.fixture
def guarded(master):
    return create_app(master, token=TOKEN).test_client()


def submit(client, body, **headers):
    return client.post("/api/submit", json=body, headers=headers)


class InlineWorker:
    """Stands in for a worker's connection; the master reads only its id."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


def compute_tiles(master, count):
    """Compute the first ``count`` pending tiles and give the master the results.

    A new worker's first chunk has one tile per process, so a worker of
    ``count`` processes leases exactly those tiles.
    """
    with master.lock:
        worker = master.scheduler.register("inline", "test", count, master.clock())
        chunk = master.scheduler.next_chunk(worker.id, master.clock())
        job = master.scheduler.jobs[chunk.job_id]
    data = tuple(
        TileData(tile, encode_tile(compute_rect(job.spec, job.grid.rect(tile))[0]))
        for tile in chunk.tiles
    )
    result = Result(chunk.id, data, (), 0.01, 1000)
    asyncio.run(master._take_result(InlineWorker(worker.id), result))
    return chunk.tiles


# -- reading -----------------------------------------------------------------


def test_status_of_an_idle_master(client):
    answer = client.get("/api/status")

    assert answer.status_code == 200
    status = answer.get_json()
    assert status["job"] is None and status["queue"] == []
    assert status["workers_connected"] == 0
    assert status["auth"] == {"required": False, "authenticated": True}
    assert status["totals"]["tiles_done"] == 0


def test_submitted_jobs_run_one_at_a_time_and_queue_up(client):
    first = submit(client, {**JOB, "palette": "Fire", "equalize": True})
    second = submit(client, {**JOB, "max_iter": 200})

    assert first.status_code == 202 and second.status_code == 202
    running, queued = first.get_json()["job"], second.get_json()["job"]
    assert running["id"] == SPEC.key() and running["status"] == "running"
    assert running["params"] == {
        **SPEC.to_dict(),
        "palette": "fire",
        "equalize": True,
    }
    assert running["tiles"]["total"] == 6 and running["tiles"]["pending"] == 6
    assert queued["status"] == "queued"

    status = client.get("/api/status").get_json()
    assert status["job"]["id"] == running["id"] and status["queue"] == [queued["id"]]
    listed = client.get("/api/jobs").get_json()["jobs"]
    assert [j["id"] for j in listed] == [queued["id"], running["id"]]
    assert client.get(f"/api/jobs/{queued['id']}").get_json()["job"] == queued


def test_submitting_the_running_job_again_returns_it(client):
    first = submit(client, JOB).get_json()["job"]
    again = submit(client, {**JOB, "size": [96, 64], "center": [-0.5, 0]})

    assert again.get_json()["job"]["id"] == first["id"]
    assert len(client.get("/api/jobs").get_json()["jobs"]) == 1


@pytest.mark.parametrize(
    ("field", "value", "cli"),
    [
        ("size", "0x100", ["--size", "0x100"]),
        ("size", "-5x100", ["--size", "-5x100"]),
        ("size", "190000x190000", ["--size", "190000x190000"]),
        ("center", "nan,0", ["--center", "nan,0"]),
        ("center", "1", ["--center", "1"]),
        ("center", "a,b", ["--center", "a,b"]),
        ("span", "0", ["--span", "0"]),
        ("span", "nan", ["--span", "nan"]),
        ("span", "1e-20", ["--span", "1e-20"]),
        ("max_iter", 0, ["--max-iter", "0"]),
        ("max_iter", "-3", ["--max-iter", "-3"]),
        ("tile_size", 3, ["--tile-size", "3"]),
    ],
)
def test_bad_parameters_get_the_cli_message_with_http_400(
    client, capsys, tmp_path, field, value, cli
):
    answer = submit(client, {field: value})

    with pytest.raises(SystemExit):
        main(["render", "--job-dir", str(tmp_path / "cli"), *cli])
    cli_line = capsys.readouterr().err.strip().removeprefix("fraktal: error: ")
    cli_line = re.sub(r"^Invalid value for '--[a-z-]+': ", "", cli_line)
    assert answer.status_code == 400
    assert answer.get_json() == {"error": cli_line}
    assert client.get("/api/jobs").get_json()["jobs"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"palette": "rainbow"}, "unknown palette 'rainbow'; choose one of: nocturne"),
        ({"palette": 3}, "unknown palette 3"),
        ({"max_iter": "lots"}, "max-iter must be a whole number from 1 to 10"),
        ({"max_iter": 10.5}, "max-iter must be a whole number from 1 to 10"),
        ({"span": "wide"}, "span must be a number, got 'wide'"),
        ({"size": 640}, "size must be WIDTHxHEIGHT such as 1920x1080"),
        ({"size": ["a", 3]}, "width must be a whole number from 1 to 200000"),
        ({"center": [0]}, "center must be RE,IM such as -0.75,0.1"),
        ({"equalize": "yes"}, "equalize must be true or false, got 'yes'"),
        ({"colour": "red"}, "unknown field 'colour'; allowed fields: size, center"),
        ([1, 2], "a job is a JSON object with some of the fields"),
    ],
)
def test_bad_submissions_say_what_was_wrong_and_what_is_allowed(client, body, expected):
    answer = submit(client, body)

    assert answer.status_code == 400
    assert expected in answer.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{nope", "the body is not valid JSON: Expecting property name"),
        (b"", "the body is not valid JSON: Expecting value"),
        (b"\xff\xfe\xfd", "the body is not JSON text in UTF-8, -16 or -32"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"max_iter": ' + b"9" * 5000 + b"}", "a number far too long"),
    ],
)
def test_a_body_that_is_not_json_is_refused_and_says_why(client, body, expected):
    answer = client.post("/api/submit", data=body, content_type="application/json")

    assert answer.status_code == 400
    assert expected in answer.get_json()["error"]
    assert client.get("/api/jobs").get_json()["jobs"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"span": 10**400}, "span must be a finite number above 0 and at most 100"),
        ({"center": [10**400, 0]}, "centre real part must be a finite number"),
        ({"max_iter": "1" * 5000}, "max-iter must be a whole number from 1 to"),
        ({"size": "1" * 5000 + "x1"}, "is too large; each side must be from 1 to"),
        ({"size": ["1" * 5000, 1]}, "width must be a whole number from 1 to 200000"),
    ],
)
def test_numbers_too_large_for_python_to_read_are_out_of_range(client, body, expected):
    answer = submit(client, body)

    assert answer.status_code == 400
    assert expected in answer.get_json()["error"]


def test_whole_numbers_as_text_may_have_leading_zeros(client):
    answer = submit(client, {**JOB, "max_iter": "0" * 30 + "100", "size": ["096", 64]})

    assert answer.status_code == 202
    assert answer.get_json()["job"]["id"] == SPEC.key()


def test_submit_needs_a_json_body(client):
    answer = client.post("/api/submit", data="size=96x64")

    assert answer.status_code == 415
    assert "Content-Type: application/json" in answer.get_json()["error"]


# -- cancelling --------------------------------------------------------------


def test_cancel_the_running_job_and_the_queued_one_starts(client):
    first = submit(client, JOB).get_json()["job"]
    second = submit(client, {**JOB, "max_iter": 200}).get_json()["job"]

    answer = client.post("/api/cancel", json={})

    assert answer.status_code == 200
    assert answer.get_json()["job"] == {
        **answer.get_json()["job"],
        "id": first["id"],
        "status": "cancelled",
    }
    status = client.get("/api/status").get_json()
    assert status["job"]["id"] == second["id"] and status["job"]["status"] == "running"


def test_cancel_a_queued_job_by_id(client):
    submit(client, JOB)
    queued = submit(client, {**JOB, "max_iter": 200}).get_json()["job"]

    answer = client.post("/api/cancel", json={"job_id": queued["id"]})

    assert answer.get_json()["job"]["status"] == "cancelled"
    assert client.get("/api/status").get_json()["queue"] == []


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"job_id": "feedfacecafe"}, 404, "no job has the id 'feedfacecafe'"),
        ({}, 409, "no job is running; name a queued job with job_id"),
        ({"job": "x"}, 400, 'cancel takes {"job_id": "ID"}'),
        ({"job_id": 7}, 400, "job_id must be a job's id as text, got 7"),
    ],
)
def test_cancel_errors(client, body, status, expected):
    answer = client.post("/api/cancel", json=body)

    assert answer.status_code == status
    assert expected in answer.get_json()["error"]


@pytest.mark.parametrize("body", [b"{nope", b"", b"null", b"[]", b"false", b"0"])
def test_a_cancel_whose_body_is_not_an_object_cancels_nothing(client, body):
    job = submit(client, JOB).get_json()["job"]

    answer = client.post("/api/cancel", data=body, content_type="application/json")

    assert answer.status_code == 400
    status = client.get(f"/api/jobs/{job['id']}").get_json()["job"]["status"]
    assert status == "running"


def test_a_job_that_ended_cannot_be_cancelled(client):
    job = submit(client, JOB).get_json()["job"]
    client.post("/api/cancel", json={"job_id": job["id"]})

    answer = client.post("/api/cancel", json={"job_id": job["id"]})

    assert answer.status_code == 409
    assert answer.get_json()["error"] == (
        f"job {job['id']} is already cancelled; only queued or running jobs "
        f"can be cancelled"
    )


# -- who may write ------------------------------------------------------------


def test_with_a_token_writes_need_it_and_reads_do_not(guarded):
    refused = submit(guarded, JOB)
    wrong = submit(guarded, JOB, Authorization="Bearer guess")
    cancel = guarded.post("/api/cancel", json={})

    assert refused.status_code == wrong.status_code == cancel.status_code == 401
    assert "Authorization: Bearer TOKEN" in refused.get_json()["error"]
    assert guarded.get("/api/jobs").get_json()["jobs"] == []
    status = guarded.get("/api/status").get_json()
    assert status["auth"] == {"required": True, "authenticated": False}

    accepted = submit(guarded, JOB, Authorization=f"Bearer {TOKEN}")
    assert accepted.status_code == 202


def test_login_form_sets_a_cookie_that_is_not_the_token(guarded):
    failed = guarded.post("/login", data={"token": "guess"})
    assert failed.status_code == 401 and b"not the master" in failed.data
    assert guarded.get_cookie("fraktal_session") is None

    logged_in = guarded.post("/login", data={"token": TOKEN})

    assert logged_in.status_code == 303 and logged_in.location == "/"
    cookie = guarded.get_cookie("fraktal_session")
    assert cookie.http_only and cookie.same_site == "Strict"
    assert TOKEN not in cookie.value
    assert submit(guarded, JOB).status_code == 202
    status = guarded.get("/api/status").get_json()
    assert status["auth"]["authenticated"] is True

    guarded.post("/logout")
    assert submit(guarded, {**JOB, "max_iter": 7}).status_code == 401


def test_a_forged_cookie_is_refused(guarded):
    guarded.set_cookie("fraktal_session", TOKEN)

    assert submit(guarded, JOB).status_code == 401


def test_writes_from_another_site_are_refused(client):
    foreign = submit(client, JOB, Origin="http://evil.example")
    cross = submit(client, JOB, **{"Sec-Fetch-Site": "cross-site"})
    own = submit(client, JOB, Origin="http://localhost")

    assert foreign.status_code == cross.status_code == 403
    assert "refused a write from 'http://evil.example'" in foreign.get_json()["error"]
    assert own.status_code == 202


@pytest.mark.parametrize("origin", ["http://[::1", "http://[evil.example]:80"])
def test_a_malformed_origin_is_refused_as_another_site(client, origin):
    answer = submit(client, JOB, Origin=origin)

    assert answer.status_code == 403
    assert answer.get_json() == {
        "error": f"refused a write from {origin!r}, not this page"
    }
    assert client.get("/api/jobs").get_json()["jobs"] == []


def test_loopback_dashboard_answers_only_to_loopback_names(master):
    client = create_app(master, local_only=True).test_client()

    rebound = client.get("/api/status", headers={"Host": "evil.example:5001"})

    assert rebound.status_code == 400
    assert "answers only to 127.0.0.1, [::1], localhost" in rebound.get_json()["error"]
    for host in ("localhost:5001", "127.0.0.1:5001", "[::1]:5001", "localhost"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_login_is_not_needed_without_a_token(client):
    page = client.get("/").get_data(as_text=True)

    assert client.get("/login").status_code == 302
    assert "log in" not in page
    assert 'id="submit-form"' in page


def test_pages_carry_security_headers(client):
    answer = client.get("/")

    assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert client.get("/api/status").headers["Cache-Control"] == "no-store"


# -- previews, pictures, events, metrics ----------------------------------


def test_preview_shows_done_tiles_and_background_elsewhere(client, master):
    job = submit(client, {**JOB, "palette": "ice"}).get_json()["job"]
    empty = Image.open(
        io.BytesIO(client.get(f"/api/jobs/{job['id']}/preview.png").data)
    )
    assert (np.asarray(empty) == BACKGROUND).all()

    tiles = compute_tiles(master, 2)  # tiles 0 and 1: x 0..63, y 0..31
    answer = client.get(f"/api/jobs/{job['id']}/preview.png")

    assert answer.status_code == 200 and answer.mimetype == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(answer.data)).convert("RGB"))
    assert tiles == (0, 1) and rgb.shape == (64, 96, 3)
    expected = colourize(render(SPEC)[:32, :64], "ice")
    assert np.array_equal(rgb[:32, :64], expected)
    assert (rgb[:32, 64:] == BACKGROUND).all() and (rgb[32:] == BACKGROUND).all()


def test_preview_is_shrunk_to_the_size_asked(client):
    job = submit(client, JOB).get_json()["job"]

    answer = client.get(f"/api/jobs/{job['id']}/preview.png?size=48")

    assert Image.open(io.BytesIO(answer.data)).size == (48, 32)


@pytest.mark.parametrize("size", ["5", "4096", "big", "-1"])
def test_preview_size_out_of_range_is_refused(client, size):
    job = submit(client, JOB).get_json()["job"]

    answer = client.get(f"/api/jobs/{job['id']}/preview.png?size={size}")

    assert answer.status_code == 400
    assert "size must be a whole number from 16 to 2048" in answer.get_json()["error"]


@pytest.mark.parametrize("after", ["\u00b2", "\u0666\u0664", "9" * 5000, "-1", ""])
def test_events_after_must_be_ascii_digits_in_range(client, after):
    answer = client.get("/api/events", query_string={"after": after})

    assert answer.status_code == 400
    assert answer.get_json() == {
        "error": f"after must be a whole number from 0 to {2**62}, got {after!r}"
    }


def test_events_after_may_have_leading_zeros(client):
    submit(client, JOB)

    answer = client.get("/api/events", query_string={"after": "0" * 40 + "1"})

    assert answer.status_code == 200
    assert [e["seq"] for e in answer.get_json()["events"]] == [2]


def test_unknown_jobs_are_404_everywhere(client):
    for path in ("", "/preview.png", "/image.png"):
        answer = client.get(f"/api/jobs/0123456789ab{path}")
        assert answer.status_code == 404
        assert answer.get_json() == {"error": "no job has the id '0123456789ab'"}


def test_unfinished_job_has_no_picture_to_download(client):
    job = submit(client, JOB).get_json()["job"]

    answer = client.get(f"/api/jobs/{job['id']}/image.png")

    assert answer.status_code == 404
    assert answer.get_json()["error"] == (
        f"job {job['id']} has no finished picture (the job is running)"
    )


def test_events_since_a_sequence_number(client):
    submit(client, JOB)
    everything = client.get("/api/events").get_json()
    assert [e["kind"] for e in everything["events"]] == ["job-queued", "job-started"]

    submit(client, {**JOB, "max_iter": 200})
    newer = client.get(f"/api/events?after={everything['last']}").get_json()

    assert [e["kind"] for e in newer["events"]] == ["job-queued"]
    assert newer["last"] == everything["last"] + 1
    latest = client.get("/api/events?limit=1").get_json()["events"]
    assert latest == newer["events"]
    assert client.get("/api/events?after=x").status_code == 400


def test_workers_are_listed(client, master):
    submit(client, JOB)
    compute_tiles(master, 1)

    (worker,) = client.get("/api/workers").get_json()["workers"]

    assert (worker["name"], worker["host"], worker["processes"]) == (
        "inline",
        "test",
        1,
    )
    assert worker["status"] == "idle" and worker["chunks"] == []
    assert worker["tiles_done"] == 1 and worker["pixels_done"] == 32 * 32


def test_metrics_in_prometheus_text_format(client, master):
    job = submit(client, JOB).get_json()["job"]
    compute_tiles(master, 3)

    answer = client.get("/metrics")

    assert answer.content_type == "text/plain; version=0.0.4; charset=utf-8"
    lines = answer.get_data(as_text=True).splitlines()
    assert "# TYPE fraktal_tiles_done_total counter" in lines
    assert "fraktal_tiles_done_total 3" in lines
    assert f"fraktal_pixels_done_total {3 * 32 * 32}" in lines
    assert "fraktal_iterations_total 1000" in lines
    assert "fraktal_workers_connected 1" in lines
    assert 'fraktal_workers{status="idle"} 1' in lines
    assert f'fraktal_job_progress_ratio{{job="{job["id"]}"}} 0.5' in lines
    assert f'fraktal_job_tiles{{job="{job["id"]}",state="done"}} 3' in lines
    assert f'fraktal_job_tiles{{job="{job["id"]}",state="pending"}} 3' in lines
    assert 'fraktal_jobs{status="running"} 1' in lines
    for line in lines:
        assert line.startswith("# ") or line.split(" ")[-1].replace(".", "").isdigit()


def test_health_check_fails_while_the_master_is_not_serving(client):
    answer = client.get("/healthz")

    assert answer.status_code == 503
    assert answer.get_json()["status"] == "unavailable"


def test_health_check_passes_on_a_serving_master(start_master):
    running = start_master()

    answer = create_app(running.master).test_client().get("/healthz")

    assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}


def test_unknown_api_paths_answer_json(client):
    answer = client.get("/api/nothing")

    assert answer.status_code == 404 and "Not Found" in answer.get_json()["error"]
    assert client.get("/api/submit").status_code == 405


def test_preview_cache_is_bounded_in_bytes_as_well_as_entries():
    cache = PngCache(capacity=10, max_bytes=1000)
    for n in range(5):
        cache.put(("job", n), bytes(400))

    assert cache.size == 800
    assert cache.get(("job", 4)) is not None and cache.get(("job", 2)) is None
    cache.put(("job", 4), bytes(100))
    assert cache.size == 500
