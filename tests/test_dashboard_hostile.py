"""Hostile requests against the dashboard, served by waitress on loopback.

Theory of operation
-------------------
One master serves two dashboards through waitress, one guarded by a token and
one without, while a real `fraktal worker` computes a stream of small jobs
submitted through the API. Hypothesis generates requests family by family
(derandomized, so CI sends the same ones every time); each goes out on its own
connection, and `Arena.send` judges the answer by rules that hold for every
request:

- no 5xx, no traceback in the body, no ERROR record or stack trace in the log;
- a refusal under /api/ is JSON holding one line in ``error``;
- a redirect stays on the dashboard's own origin;
- no answer carries bytes from outside the job folders and the static files;
- no job appears unless the request was a valid submission with the right to
  write, and none is cancelled unless it was such a cancel.

For most families the test also knows the exact status the README promises,
worked out from how the request was built (which credential, origin, host
and content type it carries, see `Access`) rather than from the dashboard's
code. At the end every job the worker computed equals the one-process render
bit for bit, its picture has the right pixels, the worker is still connected
and /healthz answers on both dashboards.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from chaos import each_tile_journaled_once, reference, wait_until
from fraktal.dashboard.server import Dashboard
from fraktal.dashboard.submission import FIELDS, parse_submission
from fraktal.errors import UsageError
from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus
from fraktal.master.store import open_raw
from fraktal.render.palette import colourize, palette_names
from fraktal.render.spec import RenderSpec, make_spec

pytestmark = pytest.mark.slow

TOKEN = "dashboard-hostile-secret"
BODY_LIMIT = 64 * 1024
ARENA_JOBS = 60
CASES_PER_JOB = 40  # spreads the worker's jobs over the whole attack
STATIC = Path(__file__).resolve().parent.parent / "src/fraktal/dashboard/static"
CANARY = b"fraktal-canary-7c41e9"  # planted beside and inside the jobs folder
# Bytes no answer may hold: the canary, a raw array, the dashboard's source.
LEAKS = (CANARY, b"\x93NUMPY", b"def create_app(", b"Traceback (most recent")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENDED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
ALPHANUMERIC = st.characters(codec="ascii", categories=["L", "N"])
JSON_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/problem+json",
]
OTHER_TYPES = [
    None,
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonp",
]


def fuzz(examples: int):
    # No shrinking: a failing case is printed short as it is (see `Probe`),
    # and shrinking against a dashboard that stopped answering takes minutes.
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


# -- requests and answers -----------------------------------------------------


@dataclass(frozen=True)
class Access:
    """The headers that decide whether a request may write, and what they mean.

    The meaning is fixed by how the strategy built them: ``host_ok`` when Host
    names loopback, ``same_site`` when there is no Origin or the dashboard's
    own and no ``Sec-Fetch-Site: cross-site``, ``credential`` when the token
    or the login cookie is there (always true for the open dashboard).
    """

    headers: tuple[tuple[str, str], ...]
    host_ok: bool
    same_site: bool
    credential: bool

    @property
    def may_write(self) -> bool:
        return self.host_ok and self.same_site and self.credential


@dataclass(frozen=True, repr=False)
class Probe:
    """One request as it goes on the wire, and the route it was aimed at.

    ``route`` is None for requests whose target is free-form (traversal
    attempts): only the rules for every request judge those.
    """

    family: str
    guarded: bool
    method: str
    target: str
    access: Access
    route: str | None = None
    content_type: str | None = None
    body: bytes | None = None
    chunked: bool = False
    job_id: str | None = None  # the id in the path, decoded
    params: tuple[tuple[str, str], ...] = ()  # the query, decoded

    @property
    def path(self) -> str:
        """The path as the dashboard sees it: percent-decoded, UTF-8."""
        raw = self.target.partition("?")[0]
        return unquote(raw, errors="replace")

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        # Hypothesis prints failing cases; a 64 KiB body would drown them.
        return (
            f"Probe({self.family!r}, {self.method} {shorten(self.target)} "
            f"{'guarded' if self.guarded else 'open'}, {self.access!r}, "
            f"content_type={self.content_type!r}, body={shorten(self.body)}, "
            f"chunked={self.chunked})"
        )


def shorten(value: str | bytes | None, keep: int = 300) -> str:
    if value is None or len(value) <= keep:
        return repr(value)
    return f"{value[:keep]!r}... ({len(value)} in all)"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def mimetype(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Expected:
    """What the README promises for a request."""

    statuses: frozenset[int]
    error: str | None = None  # the exact error line, where it is known
    submits: RenderSpec | None = None
    cancels: str | None = None


def expected(*statuses: int, **details: Any) -> Expected:
    return Expected(frozenset(statuses), **details)


def send(port: int, probe: Probe) -> Answer:
    """Send ``probe`` on a new connection, exactly as built, and read the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.putrequest(
            probe.method, probe.target, skip_host=True, skip_accept_encoding=True
        )
        for name, value in probe.access.headers:
            connection.putheader(name, value)
        if probe.content_type is not None:
            connection.putheader("Content-Type", probe.content_type)
        body = probe.body
        if body is not None and probe.chunked:
            connection.putheader("Transfer-Encoding", "chunked")
            body = chunked(body)
        elif body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class ErrorLog(logging.Handler):
    """Keeps every record at ERROR or above, and any record with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


# -- the arena ----------------------------------------------------------------


@dataclass
class Arena:
    """The master, its two dashboards, the worker's jobs and what was sent."""

    running: Any
    open: Dashboard
    guarded: Dashboard
    jobs_dir: Path
    cookie: str = ""
    log: ErrorLog = field(default_factory=ErrorLog)
    specs: list[RenderSpec] = field(default_factory=list)
    decoys: list[str] = field(default_factory=list)
    fuzz_jobs: set[str] = field(default_factory=set)
    answers: dict[str, Counter[int]] = field(default_factory=dict)
    next_job_at: int = 0

    @property
    def master(self):
        return self.running.master

    def port(self, guarded: bool) -> int:
        return (self.guarded if guarded else self.open).port

    # -- the jobs the worker computes meanwhile

    def keep_worker_busy(self) -> None:
        """Submit the next small job when the last one ended and it is time."""
        sent = count(self.answers)
        if self.specs and self.status(self.specs[-1].key()) not in ENDED:
            return
        if sent < self.next_job_at or len(self.specs) >= ARENA_JOBS:
            return
        self.submit_arena_job()
        self.next_job_at = sent + CASES_PER_JOB

    def submit_arena_job(self) -> None:
        spec = make_spec(
            width=160,
            height=120,
            center_re=-0.7436 + 1e-4 * len(self.specs),
            center_im=0.1318,
            span=0.02,
            max_iter=2000,
            tile_size=16,
        )
        body = {"size": "160x120", "span": 0.02, "max_iter": 2000, "tile_size": 16}
        body["center"] = [spec.view.center_re, spec.view.center_im]
        probe = Probe(
            "arena",
            True,
            "POST",
            "/api/submit",
            proper(self, True),
            content_type="application/json",
            body=json.dumps(body).encode(),
        )
        answer = send(self.guarded.port, probe)
        assert answer.status == 202, answer
        assert answer.json()["job"]["id"] == spec.key()
        self.specs.append(spec)

    def decoy(self) -> str:
        """A job that is queued or running, for cancels that must be obeyed.

        It takes the worker a second or two, so the cancel usually finds it
        still there, and the worker is told to drop it.
        """
        if not self.decoys or self.status(self.decoys[-1]) in ENDED:
            spec = make_spec(
                width=512,
                height=512,
                center_re=-0.75 + 1e-3 * len(self.decoys),
                center_im=0.1,
                span=0.5,
                max_iter=3000,
                tile_size=16,
            )
            self.decoys.append(self.master.submit(spec, Output(png=None)).id)
        return self.decoys[-1]

    def status(self, job_id: str) -> JobStatus | None:
        with self.master.lock:
            job = self.master.scheduler.jobs.get(job_id)
            return job.status if job else None

    def known_ids(self) -> list[str]:
        with self.master.lock:
            return list(self.master.scheduler.jobs)

    def running_job(self) -> str | None:
        with self.master.lock:
            active = self.master.scheduler.active
            return active.id if active else None

    def ended_job(self) -> str | None:
        with self.master.lock:
            jobs = self.master.scheduler.jobs.values()
            return next((j.id for j in jobs if j.status in ENDED), None)

    def jobs_now(self) -> dict[str, tuple[object, JobStatus]]:
        with self.master.lock:
            jobs = self.master.scheduler.jobs.items()
            return {job_id: (job, job.status) for job_id, job in jobs}

    # -- one case

    def send(self, probe: Probe) -> Answer:
        """Send a hostile request and check everything the answer must keep."""
        self.keep_worker_busy()
        stray, self.log.records = self.log.records, []
        assert not stray, [f"between cases: {r.getMessage()}" for r in stray]
        promise = self.expect(probe)
        before = self.jobs_now()

        answer = send(self.port(probe.guarded), probe)

        self.answers.setdefault(probe.family, Counter())[answer.status] += 1
        self.check_clean(probe, answer)
        if promise is not None:
            assert answer.status in promise.statuses, (answer.status, answer.body)
            if promise.error is not None:
                assert answer.json() == {"error": promise.error}
        self.check_jobs(probe, answer, promise, before)
        return answer

    def check_clean(self, probe: Probe, answer: Answer) -> None:
        # /healthz alone may say 503, when the master's lock is busy for 2 s.
        logged, self.log.records = self.log.records, []
        unhealthy = answer.status == 503 and probe.path == "/healthz"
        assert 100 <= answer.status < 500 or unhealthy, (answer.status, answer.body)
        assert not logged, [record.getMessage() for record in logged]
        for leak in LEAKS:
            assert leak not in answer.body, leak
        if 300 <= answer.status < 400:
            location = urlsplit(answer.headers.get("Location", ""))
            own = ("", dict(probe.access.headers)["Host"])
            assert location.netloc in own and location.path.startswith("/"), location
        if probe.method == "HEAD" or not answer.body:
            return
        refused_by_host = answer.status == 400 and not probe.access.host_ok
        if answer.status >= 400 and (probe.path.startswith("/api/") or refused_by_host):
            error = answer.json()
            assert answer.mimetype == "application/json"
            assert list(error) == ["error"] and isinstance(error["error"], str)
            assert "\n" not in error["error"] and error["error"]
        if answer.status == 200:
            self.check_served(probe, answer)

    def check_served(self, probe: Probe, answer: Answer) -> None:
        """A 200 holds only what the dashboard may serve."""
        path = probe.path
        if answer.mimetype == "application/json":
            answer.json()
        elif answer.mimetype == "image/png":
            assert answer.body.startswith(PNG_SIGNATURE)
            if "attachment" in answer.headers.get("Content-Disposition", ""):
                pictures = [p.read_bytes() for p in self.jobs_dir.glob("*/image.png")]
                assert answer.body in pictures
        elif path.startswith("/static/"):
            assert answer.body in [p.read_bytes() for p in STATIC.iterdir()]
        elif answer.mimetype == "text/html":
            assert answer.body.lstrip().lower().startswith(b"<!doctype html>")
        else:
            assert path == "/metrics" and answer.mimetype == "text/plain", path

    def check_jobs(
        self,
        probe: Probe,
        answer: Answer,
        promise: Expected | None,
        before: dict[str, tuple[object, JobStatus]],
    ) -> None:
        """No job appears or is cancelled but by a valid, authorised request."""
        after = self.jobs_now()
        appeared = {
            i for i, (job, _) in after.items() if before.get(i, (None,))[0] is not job
        }
        cancelled = {
            i
            for i, (job, status) in after.items()
            if status is JobStatus.CANCELLED
            and i in before
            and before[i][0] is job
            and before[i][1] is not JobStatus.CANCELLED
        }
        submits = promise.submits if promise and answer.status == 202 else None
        cancels = promise.cancels if promise and answer.status == 200 else None

        assert appeared <= ({submits.key()} if submits else set()), appeared
        assert cancelled == ({cancels} if cancels else set()), cancelled
        if submits is not None:
            assert answer.json()["job"]["id"] == submits.key()
            self.forget(submits.key())

    def forget(self, job_id: str) -> None:
        """Cancel a job the fuzzing created, so the worker keeps to its own."""
        if job_id not in {s.key() for s in self.specs}:
            self.fuzz_jobs.add(job_id)
            self.master.cancel(job_id)

    # -- what the README promises

    def expect(self, probe: Probe) -> Expected | None:
        if not probe.access.host_ok:
            return expected(400)
        if probe.route is None:
            return None
        return getattr(self, f"expect_{probe.route}")(probe)

    def expect_write(self, probe: Probe) -> tuple[Expected | None, Any]:
        """The refusal before the body's meaning counts, or the decoded body."""
        body = probe.body or b""
        if not probe.access.same_site:
            return expected(403), None
        if not probe.access.credential:
            return expected(401), None
        if not is_json(probe.content_type):
            return expected(415), None
        if len(body) > BODY_LIMIT:
            return expected(413), None
        try:
            return None, json.loads(body)
        except (ValueError, RecursionError):
            return expected(400), None

    def expect_submit(self, probe: Probe) -> Expected:
        refusal, value = self.expect_write(probe)
        if refusal is not None:
            return refusal
        # The dashboard's own parser: its answers are tested against the CLI's
        # (test_dashboard_api.py); here it only says valid or which line.
        try:
            submission = parse_submission(value)
        except UsageError as error:
            return expected(400, error=str(error))
        except ValueError:  # the checks themselves failed: still a bad value
            return expected(400)
        return expected(202, submits=submission.spec)

    def expect_cancel(self, probe: Probe) -> Expected:
        refusal, value = self.expect_write(probe)
        if refusal is not None:
            return refusal
        if not isinstance(value, dict) or set(value) - {"job_id"}:
            return expected(400)
        job_id = value.get("job_id")
        if job_id == "" or (job_id is not None and not isinstance(job_id, str)):
            return expected(400)
        job_id = job_id or self.running_job()
        if job_id is None:
            return expected(409)
        status = self.status(job_id)
        if status is None:
            return expected(404, error=f"no job has the id {job_id!r}")
        if status in ENDED:
            return expected(409)
        return expected(200, 409, cancels=job_id)  # 409: it ended meanwhile

    def expect_login(self, probe: Probe) -> Expected:
        if not probe.access.same_site:
            return expected(403)
        if not probe.guarded:
            return expected(302)
        body = probe.body or b""
        if len(body) > BODY_LIMIT:
            return expected(413)
        form = probe.content_type == "application/x-www-form-urlencoded"
        return expected(303 if form and body == form_token(TOKEN) else 401)

    def expect_job(self, probe: Probe) -> Expected:
        return self.expect_known(probe) or expected(200)

    def expect_preview(self, probe: Probe) -> Expected:
        return (
            bad_param(probe, "size", 16, 2048)
            or self.expect_known(probe)
            or expected(200)
        )

    def expect_image(self, probe: Probe) -> Expected:
        with self.master.lock:
            written = self.master.written.get(probe.job_id) is not None
        if written:
            return expected(200)
        return self.expect_known(probe) or expected(200, 404)

    def expect_events(self, probe: Probe) -> Expected:
        return (
            bad_param(probe, "after", 0, 2**62)
            or bad_param(probe, "limit", 1, 500)
            or expected(200)
        )

    def expect_read(self, probe: Probe) -> Expected:
        return expected(200, 503) if probe.path == "/healthz" else expected(200)

    def expect_method(self, probe: Probe) -> Expected:
        if probe.method == "POST" and not probe.access.same_site:
            return expected(403)
        return expected(200 if probe.method == "OPTIONS" else 405)

    def expect_known(self, probe: Probe) -> Expected | None:
        if self.status(probe.job_id or "") is None:
            return expected(404, error=f"no job has the id {probe.job_id!r}")
        return None


def is_json(content_type: str | None) -> bool:
    """Werkzeug's rule: application/json, or application/ and +json."""
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def bad_param(probe: Probe, name: str, low: int, high: int) -> Expected | None:
    """The refusal of a query parameter that is not a whole number in range."""
    text = probe.param(name)
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if (
        text
        and re.fullmatch("[0-9]+", text)
        and len(digits) <= 20
        and low <= int(digits) <= high
    ):
        return None
    return expected(
        400, error=f"{name} must be a whole number from {low} to {high}, got {text!r}"
    )


def form_token(token: str) -> bytes:
    return b"token=" + quote(token, safe="").encode()


# -- strategies: who is asking -------------------------------------------------


def accesses(arena: Arena, guarded: bool) -> st.SearchStrategy[Access]:
    """Hosts, origins and credentials, most of them what the page itself sends."""
    port = arena.port(guarded)
    own = f"127.0.0.1:{port}"
    loopback = [own, f"localhost:{port}", f"[::1]:{port}", "localhost", "127.0.0.1"]
    foreign = [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"localhost.evil.example:{port}",
        f"[::2]:{port}",
        "192.168.1.10:5001",
    ]
    right = st.sampled_from([f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN}"])
    wrong = st.sampled_from(
        [
            TOKEN,
            f"Bearer {TOKEN}x",
            f"Bearer {TOKEN[:-1]}",
            "Bearer",
            f"Basic {base64.b64encode(TOKEN.encode()).decode()}",
            f"Token {TOKEN}",
            f"Bearer {arena.cookie}",
        ]
    ) | st.text(PRINTABLE, max_size=60).map(lambda t: f"Bearer {t}")
    login = f"fraktal_session={arena.cookie}"
    cookie = st.sampled_from([login, f"theme=dark; {login}"])
    forged = st.sampled_from(
        [
            f"fraktal_session={TOKEN}",
            f"{login}0",
            f"fraktal_session={arena.cookie.upper()}",
            "fraktal_session=",
            f"session={arena.cookie}",
        ]
    ) | st.text(ALPHANUMERIC, max_size=64).map(lambda t: f"fraktal_session={t}")
    # (header or cookie, whether it proves the token)
    credentials = st.tuples(st.none() | right, st.none() | cookie).map(
        lambda pair: (pair, pair != (None, None))
    )
    no_credentials = st.tuples(st.none() | wrong, st.none() | forged).map(
        lambda pair: (pair, False)
    )

    @st.composite
    def build(draw) -> Access:
        proper = draw(st.integers(0, 3)) > 0
        host = own if proper else draw(st.sampled_from(loopback + foreign))
        origins = [None, f"http://{host}"]
        if not proper:
            origins += ["null", "http://evil.example", f"http://127.0.0.1:{port + 1}"]
            origins += ["http://[::1", "http://[evil", f"http://{host}.evil.example"]
        origin = draw(st.sampled_from(origins) | st.text(PRINTABLE, max_size=30))
        if proper and origin not in origins:
            origin = None
        site = draw(st.sampled_from([None, "same-origin", "same-site", "none"]))
        if not proper and draw(st.booleans()):
            site = "cross-site"

        headers = [("Host", host)]
        headers += [("Origin", origin)] if origin is not None else []
        headers += [("Sec-Fetch-Site", site)] if site is not None else []
        header = sent_cookie = None
        has_credential = not guarded
        if guarded and proper:
            header, has_credential = draw(right), True
        elif guarded:
            (header, sent_cookie), has_credential = draw(credentials | no_credentials)
        headers += [("Authorization", header)] if header is not None else []
        headers += [("Cookie", sent_cookie)] if sent_cookie is not None else []
        return Access(
            tuple(headers),
            host_ok=host in loopback,
            same_site=origin in (None, f"http://{host}") and site != "cross-site",
            credential=has_credential,
        )

    return build()


# -- strategies: what is asked for ---------------------------------------------

HUGE_NUMBERS = [10**30, 2**64, 10**400, -(10**400), 1e308, float("inf"), float("nan")]
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.sampled_from(HUGE_NUMBERS)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4
        )
    ),
    max_leaves=10,
)


def spelled(values: list[Any], *forms) -> st.SearchStrategy[Any]:
    """Each value written in each of ``forms``."""
    return st.sampled_from([form(value) for value in values for form in forms])


def whole(*numbers: int) -> st.SearchStrategy[Any]:
    return spelled(list(numbers), int, str, lambda n: f" {n}", lambda n: f"+00{n}")


# Few values, many spellings: every distinct valid job the fuzzing submits
# is queued, and holds its folder open until it ends (see `Master.stores`).
GOOD_VALUES = {
    "size": spelled(
        [(1, 1), (64, 48), (256, 200)],
        lambda wh: f"{wh[0]}x{wh[1]}",
        list,
        lambda wh: [str(wh[0]), str(wh[1])],
        lambda wh: f" {wh[0]} X {wh[1]} ",
    ),
    "center": spelled(
        [(-0.75, 0.0), (0.25, -0.5)],
        list,
        lambda c: f"{c[0]!r},{c[1]!r}",
        lambda c: [str(c[0]), str(c[1])],
    ),
    "span": spelled([4.0, 0.5], float, repr, lambda x: f"{x:e}"),
    "max_iter": whole(50, 1000),
    "palette": spelled(palette_names(), str, str.upper, lambda name: f" {name} "),
    "equalize": st.booleans(),
    "tile_size": whole(8, 64),
}
BAD_VALUES = {
    "size": [
        "0x5",
        "-5x3",
        "200001x1",
        "1" * 5000 + "x1",
        "x",
        "",
        "64",
        "1e3x5",
        "\u0666\u0664x\u0664\u0668",
        [64],
        [64, 48, 1],
        {"w": 64},
        [-1, 5],
        [10**30, 1],
        ["1" * 5000, 1],
        [float("nan"), 5],
        [64.5, 48],
    ],
    "center": [
        "nan,0",
        "inf,0",
        "1",
        "a,b",
        "1,2,3",
        "1" * 5000 + ",0",
        [10**400, 0],
        [0, -(10**400)],
        [1e300, 0],
        [0, 0, 0],
        [None, 0],
        [11, 0],
    ],
    "span": [0, -1, 1e-20, 101, 10**400, "wide", "1e999", "", [], {}],
    "max_iter": [0, -3, 10**10, 10.5, "1" * 5000, "lots", "0x10", "1e3", "\u00b2"],
    "palette": ["", "rainbow", "../fire", "A" * 5000, "A" * 70_000, 3],
    "equalize": ["yes", "true", 0, 1, None, []],
    "tile_size": [3, 7, 1025, 8.0, "x", -8, "8.0"],
}


@st.composite
def submissions(draw) -> dict[str, Any]:
    """A job object: right fields, one of them mostly spoiled, rarely a stranger."""
    job = {name: draw(GOOD_VALUES[name]) for name in FIELDS if draw(st.booleans())}
    spoiled = draw(st.sampled_from([*FIELDS, None, None, None]))
    if spoiled is not None:
        job[spoiled] = draw(st.sampled_from(BAD_VALUES[spoiled]) | ANY_JSON)
    if draw(st.integers(0, 9)) == 0:
        job[draw(st.text(max_size=10).filter(lambda k: k not in FIELDS))] = draw(
            ANY_JSON
        )
    return job


def encode(value: Any, how: str) -> bytes:
    text = json.dumps(value, indent=1 if how == "indented" else None)
    if how == "utf-8":
        return json.dumps(value, ensure_ascii=False).encode()
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "padded":
        return b" \r\n\t" + text.encode() + b"\n "
    return text.encode()


ENCODINGS = st.sampled_from(
    ["plain", "plain", "indented", "padded", "utf-8", "utf-16", "bom"]
)
VALID = b'{"size": "64x48", "max_iter": 50}'
RAW_BODIES = [
    b"",
    b" ",
    b"null",
    b"[]",
    b'"64x48"',
    b"NaN",
    b"-Infinity",
    b'{"span": NaN}',
    b'{"span": Infinity}',
    b'{"center": [-Infinity, 0]}',
    b'{"max_iter": 1e999}',
    b"[" * 30_000 + b"]" * 30_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"max_iter": ' + b"9" * 5000 + b"}",
    b'{"span": 1' + b"0" * 400 + b"}",
    b'{"center": [1' + b"0" * 400 + b", 0]}",
    b'{"size": "' + b"1" * 5000 + b'x1"}',
    b'{"max_iter": "' + b"1" * 5000 + b'"}',
    b'{"size": ["' + b"1" * 5000 + b'", 1]}',
    b'{"span": 1, "span": "wide"}',
    b'{"size": "64x48"}{"size": "1x1"}',
    b'{"size": "64x48"',
    b"\xef\xbb\xbf" + VALID,
    b"\xff\xfe\xfd",
    VALID.decode().encode("utf-16"),
    VALID.decode().encode("utf-32"),
    b"\x00" * 16,
    b"size=64x48&max_iter=50",
    b'--x\r\nContent-Disposition: form-data; name="size"\r\n\r\n64x48\r\n--x--\r\n',
    VALID + b" " * BODY_LIMIT,
    b"[" + b"1," * 40_000 + b"1]",
]


@st.composite
def mutated(draw) -> bytes:
    """A valid body with a few bytes overwritten, inserted or cut."""
    body = bytearray(VALID)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        byte = draw(st.binary(min_size=1, max_size=1))
        how = draw(st.sampled_from(["overwrite", "insert", "cut"]))
        if how == "insert" or at == len(body):
            body[at:at] = byte
        elif how == "overwrite":
            body[at : at + 1] = byte
        else:
            del body[at:]
    return bytes(body)


RAW = st.sampled_from(RAW_BODIES) | mutated() | st.binary(max_size=300)
CONTENT_TYPES = st.sampled_from(JSON_TYPES * 3 + OTHER_TYPES)
RARELY = st.sampled_from([False, False, False, True])


def write_probe(family, arena, route, bodies):
    """POSTs to ``route`` from anyone, with bodies from ``bodies``."""
    guarded_access = accesses(arena, True)
    open_access = accesses(arena, False)

    @st.composite
    def build(draw) -> Probe:
        guarded = draw(st.booleans())
        return Probe(
            family,
            guarded,
            "POST",
            f"/api/{route}",
            draw(guarded_access if guarded else open_access),
            route=route,
            content_type=draw(CONTENT_TYPES),
            body=draw(bodies),
            chunked=draw(RARELY),
        )

    return build()


def submit_values(arena: Arena) -> st.SearchStrategy[Probe]:
    values = submissions() | ANY_JSON
    bodies = st.builds(encode, values, ENCODINGS)
    return write_probe("submit: JSON values", arena, "submit", bodies)


def submit_raw(arena: Arena) -> st.SearchStrategy[Probe]:
    return write_probe("submit: raw bodies", arena, "submit", RAW)


def cancels(arena: Arena) -> st.SearchStrategy[Probe]:
    """Cancels of jobs that exist, ended, never were, or are not ids at all.

    A cancel that would be obeyed may only name a decoy: the running job is
    named only by requests that must be refused before the body counts.
    """
    ids = {
        "decoy": arena.decoy,
        "ended": lambda: arena.ended_job() or "0123456789ab",
        "unknown": lambda: "0123456789ab",
    }
    values = st.one_of(
        st.sampled_from(sorted(ids)).map(lambda role: {"job_id": ids[role]()}),
        st.text(min_size=1, max_size=30).map(lambda t: {"job_id": t}),
        st.integers(50, 20_000).map(lambda n: {"job_id": "A" * n}),
        st.sampled_from(
            [{"job_id": ""}, {"job_id": 7}, {"job_id": ["x"]}, {"job": "x"}, []]
        ),
        st.builds(lambda v: {"job_id": "0123456789ab", "force": v}, ANY_JSON),
        ANY_JSON,
    )
    bodies = st.builds(encode, values, ENCODINGS) | RAW
    probes = write_probe("cancel", arena, "cancel", bodies)

    def spare_the_running_job(probe: Probe) -> Probe:
        refusal, value = arena.expect_write(probe)
        doomed = refusal is not None or not probe.access.host_ok
        if doomed:
            return probe
        names_none = isinstance(value, dict) and value.get("job_id") is None
        if names_none and set(value) <= {"job_id"}:
            return replace_body(probe, {"job_id": "0123456789ab"})
        return probe

    refused_unread = probes.filter(
        lambda p: not p.access.may_write or not is_json(p.content_type)
    )
    running = st.builds(
        lambda probe: replace_body(probe, {"job_id": arena.running_job() or ""}),
        refused_unread,
    )
    return (probes | running).map(spare_the_running_job)


def replace_body(probe: Probe, value: Any) -> Probe:
    return dataclasses.replace(probe, body=json.dumps(value).encode())


def writes_without_the_right(arena: Arena) -> st.SearchStrategy[Probe]:
    """Valid writes that must still be refused: whom, whence, or how they come."""
    fresh = st.integers(1, 10**6).map(
        lambda n: {"size": "32x32", "max_iter": n, "center": [0.25, 0.5]}
    )

    @st.composite
    def build(draw) -> Probe:
        guarded = draw(st.booleans())
        route = draw(st.sampled_from(["submit", "cancel"]))
        if route == "submit":
            value = draw(fresh)
        else:
            value = {"job_id": arena.running_job() or "0123456789ab"}
        how = draw(st.sampled_from(["access", "access", "content type", "oversized"]))
        access = accesses(arena, guarded)
        content_type = draw(st.sampled_from(JSON_TYPES))
        body = json.dumps(value).encode()
        if how == "access":
            access = access.filter(lambda a: not a.may_write)
        else:
            access = access.filter(lambda a: a.may_write)
        if how == "content type":
            content_type = draw(st.sampled_from(OTHER_TYPES))
        if how == "oversized":
            body += b" " * BODY_LIMIT
        family = "writes without the right"
        return Probe(
            family,
            guarded,
            "POST",
            f"/api/{route}",
            draw(access),
            route=route,
            content_type=content_type,
            body=body,
            chunked=draw(RARELY),
        )

    return build()


def known_id(arena: Arena) -> st.SearchStrategy[str]:
    """The id of some job the master has now.

    The list grows while the test runs; drawing an index instead of sampling
    it keeps what Hypothesis draws the same from one case to the next.
    """
    return st.integers(0, 2**16).map(lambda i: pick(arena.known_ids(), i))


def pick(items: list[str], index: int) -> str:
    return items[index % len(items)]


def read_probe(family, arena, route, target, *, job_id=None, params=()) -> Any:
    """A GET from anyone; only the Host header matters for reading."""

    @st.composite
    def build(draw) -> Probe:
        guarded = draw(st.booleans())
        access = draw(accesses(arena, guarded))
        return get(family, guarded, access, route, target, job_id, params)

    return build()


def get(family, guarded, access, route, target, job_id=None, params=()) -> Probe:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    return Probe(
        family,
        guarded,
        "GET",
        target + (f"?{query}" if query else ""),
        access,
        route=route,
        job_id=job_id,
        params=tuple(params),
    )


ODD_IDS = [
    "..",
    ".",
    "...",
    "%2e%2e",
    "..%2f..%2fsecret-canary.txt",
    "..\\..\\secret-canary.txt",
    "\x00",
    "~",
    " ",
    "image.png",
    "secret-canary.txt",
]
IDS = (
    st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t)
    | st.sampled_from(ODD_IDS)
    | st.integers(100, 30_000).map(lambda n: "A" * n)
    | st.text("0123456789abcdef", min_size=12, max_size=12)
)


def job_ids(arena: Arena) -> st.SearchStrategy[Probe]:
    """Every job route with ids real, odd, traversing or far too long."""

    @st.composite
    def build(draw) -> Probe:
        job_id = draw(known_id(arena) | IDS)
        encoded = draw(
            st.sampled_from(
                [
                    quote(job_id, safe=""),
                    quote(job_id, safe=".~"),
                    "".join(f"%{byte:02x}" for byte in job_id.encode()),
                ]
            )
        )
        route, suffix = draw(
            st.sampled_from(
                [("job", ""), ("preview", "/preview.png"), ("image", "/image.png")]
            )
        )
        target = f"/api/jobs/{encoded}{suffix}"
        return draw(read_probe("job ids", arena, route, target, job_id=job_id))

    return build()


LISTED_PARAMS = [
    "",
    "-0",
    "+5",
    " 5",
    "5 ",
    "5.0",
    "1e3",
    "0x10",
    "\u00b2",
    "\u0666\u0664",
    "\uff11\uff12",
    "9" * 19,
    "9" * 5000,
    "0" * 40 + "17",
    str(2**62),
    str(2**62 + 1),
    str(2**64),
    "NaN",
    "%zz",
    "15",
    "16",
    "2048",
    "2049",
    "500",
    "501",
]
PARAM_VALUES = st.one_of(
    st.integers(-5, 3000).map(str), st.sampled_from(LISTED_PARAMS), st.text(max_size=12)
)
QUERIED = {
    "events": ("/api/events", ["after", "limit"]),
    "preview": ("/api/jobs/{}/preview.png", ["size"]),
    "read": (
        ["/api/status", "/api/workers", "/api/jobs", "/healthz", "/metrics", "/"],
        ["size", "after", "limit", "max_side", "job_id"],
    ),
}


def queries(arena: Arena) -> st.SearchStrategy[Probe]:
    """Garbage in every query parameter an endpoint reads, and in others."""

    @st.composite
    def build(draw) -> Probe:
        route = draw(st.sampled_from(sorted(QUERIED)))
        target, names = QUERIED[route]
        if route == "read":
            target = draw(st.sampled_from(target))
        if route == "preview":
            target = target.format(draw(known_id(arena)))
        name = st.sampled_from(names) | st.text(max_size=6)
        params = draw(st.lists(st.tuples(name, PARAM_VALUES), max_size=4))
        job_id = target.split("/")[3] if route == "preview" else None
        family = "query parameters"
        return draw(
            read_probe(family, arena, route, target, job_id=job_id, params=params)
        )

    return build()


SEGMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    ".",
    "%252e%252e",
    "..%2f..",
    "..%5c..",
    "..\\..",
    "%2f",
    "%00",
    "%ff",
    "~",
    "static",
    "api",
    "jobs",
    "image.png",
    "preview.png",
    "raw.npy",
    "job.json",
    "done.journal",
    "history.jsonl",
    "secret-canary.txt",
    "etc",
    "passwd",
    "app.py",
    "templates",
    "index.html",
    "dashboard.js",
    "dashboard",
    "fraktal",
]


def paths(arena: Arena) -> st.SearchStrategy[Probe]:
    """Free-form targets: traversal by every spelling, into and out of folders."""

    @st.composite
    def build(draw) -> Probe:
        job_id = draw(known_id(arena))
        prefix = draw(
            st.sampled_from(
                [
                    "/",
                    "//",
                    "/api/",
                    "/api/jobs/",
                    f"/api/jobs/{job_id}/",
                    "/static/",
                    "/static/../",
                    "/api/jobs/%2e%2e/",
                ]
            )
        )
        segment = st.sampled_from([*SEGMENTS, job_id]) | st.text(
            PRINTABLE, max_size=10
        ).map(lambda t: quote(t, safe=""))
        target = prefix + "/".join(draw(st.lists(segment, max_size=6)))
        if draw(st.booleans()):
            target += "?" + quote(draw(st.text(max_size=20)), safe="=&%")
        method = draw(st.sampled_from(["GET", "GET", "HEAD", "POST"]))
        guarded = draw(st.booleans())
        return Probe(
            "paths",
            guarded,
            method,
            target,
            draw(accesses(arena, guarded)),
            # Never an object: a POST that lands on a write route must not act.
            content_type="application/json" if method == "POST" else None,
            body=b"[]" if method == "POST" else None,
        )

    return build()


GET_ROUTES = [
    "/api/status",
    "/api/workers",
    "/api/jobs",
    "/api/jobs/{}",
    "/api/jobs/{}/preview.png",
    "/api/jobs/{}/image.png",
    "/api/events",
    "/healthz",
    "/metrics",
    "/",
    "/static/dashboard.css",
]
POST_ROUTES = ["/api/submit", "/api/cancel", "/logout"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]
METHODS += ["PROPFIND", "SEARCH"]


def methods(arena: Arena) -> st.SearchStrategy[Probe]:
    """Every route with the methods it does not take, bodies and all."""

    @st.composite
    def build(draw) -> Probe:
        target = draw(st.sampled_from(GET_ROUTES + POST_ROUTES))
        allowed = {"POST"} if target in POST_ROUTES else {"GET", "HEAD"}
        method = draw(st.sampled_from([m for m in METHODS if m not in allowed]))
        target = target.format(draw(known_id(arena)))
        guarded = draw(st.booleans())
        with_body = draw(st.booleans())
        return Probe(
            "wrong methods",
            guarded,
            method,
            target,
            draw(accesses(arena, guarded)),
            route="method",
            content_type="application/json" if with_body else None,
            body=VALID if with_body else None,
        )

    return build()


def logins(arena: Arena) -> st.SearchStrategy[Probe]:
    """The login form with tokens right and wrong, from here and elsewhere."""
    tokens = st.sampled_from(
        [TOKEN, f"{TOKEN} ", TOKEN.upper(), "", arena.cookie]
    ) | st.text(max_size=40)

    @st.composite
    def build(draw) -> Probe:
        guarded = draw(st.booleans())
        token = draw(tokens)
        how = draw(st.sampled_from(["form", "form", "JSON", "text", "oversized"]))
        content_type, body = "application/x-www-form-urlencoded", form_token(token)
        if how == "JSON":
            content_type, body = (
                "application/json",
                json.dumps({"token": token}).encode(),
            )
        elif how == "text":
            content_type = "text/plain"
        elif how == "oversized":
            body += b"&pad=" + b"A" * BODY_LIMIT
        return Probe(
            "login",
            guarded,
            "POST",
            "/login",
            draw(accesses(arena, guarded)),
            route="login",
            content_type=content_type,
            body=body,
        )

    return build()


def every_bad_value(arena: Arena) -> list[Probe]:
    """Each listed bad value alone in a job, on both dashboards."""
    return [
        Probe(
            "submit: every listed bad value",
            guarded,
            "POST",
            "/api/submit",
            proper(arena, guarded),
            route="submit",
            content_type="application/json",
            body=json.dumps({name: value}).encode(),
        )
        for guarded in (False, True)
        for name, values in BAD_VALUES.items()
        for value in values
    ]


def every_raw_body(arena: Arena) -> list[Probe]:
    """Each listed hostile body as a submission and a cancel, on both dashboards."""
    return [
        Probe(
            "every listed raw body",
            guarded,
            "POST",
            f"/api/{route}",
            proper(arena, guarded),
            route=route,
            content_type="application/json",
            body=body,
        )
        for guarded in (False, True)
        for route in ("submit", "cancel")
        for body in RAW_BODIES
    ]


def every_query_value(arena: Arena) -> list[Probe]:
    """Each listed value in each query parameter an endpoint reads."""
    job_id = arena.specs[0].key()
    preview = f"/api/jobs/{job_id}/preview.png"
    aims = [("events", "/api/events", n) for n in ("after", "limit")]
    aims.append(("preview", preview, "size"))
    return [
        get(
            "every listed query value",
            guarded,
            proper(arena, guarded),
            route,
            target,
            job_id if route == "preview" else None,
            [(name, value)],
        )
        for guarded in (False, True)
        for route, target, name in aims
        for value in LISTED_PARAMS
    ]


SWEEPS = [every_bad_value, every_raw_body, every_query_value]
FAMILIES = [
    (submit_values, 400),
    (submit_raw, 150),
    (cancels, 150),
    (writes_without_the_right, 100),
    (job_ids, 150),
    (queries, 120),
    (paths, 150),
    (methods, 100),
    (logins, 50),
]


# -- the test -----------------------------------------------------------------


def test_hostile_requests_get_clean_refusals_while_the_worker_computes(
    start_master, workers, tmp_path
):
    running = start_master(target_seconds=0.3)
    jobs_dir = running.master.config.jobs_dir
    plant_canaries(tmp_path, jobs_dir)
    arena = Arena(
        running,
        Dashboard(running.master, "127.0.0.1", 0).start(),
        Dashboard(running.master, "127.0.0.1", 0, token=TOKEN).start(),
        jobs_dir,
    )
    logging.getLogger().addHandler(arena.log)
    try:
        arena.cookie = log_in(arena)
        arena.keep_worker_busy()
        workers(running.port, name="steady")

        for sweep in SWEEPS:
            for probe in sweep(arena):
                arena.send(probe)
        listed = count(arena.answers)
        for family, examples in FAMILIES:
            attack(arena, family(arena), examples)
        generated = count(arena.answers) - listed

        check_the_worker_was_served(arena)
    finally:
        logging.getLogger().removeHandler(arena.log)
        arena.open.close()
        arena.guarded.close()

    print(f"\ndashboard hostile cases: {generated} generated, {listed} listed")
    for family, statuses in arena.answers.items():
        print(
            f"  {family}: {count({family: statuses})}, {dict(sorted(statuses.items()))}"
        )
    print(
        f"  jobs the worker computed meanwhile: {len(arena.specs)}; jobs the fuzzing "
        f"created (valid and authorised, then cancelled): {len(arena.fuzz_jobs)}"
    )
    assert generated >= 1000


def count(answers: dict[str, Counter[int]]) -> int:
    return sum(sum(statuses.values()) for statuses in answers.values())


def attack(arena: Arena, probes: st.SearchStrategy[Probe], examples: int) -> None:
    @fuzz(examples)
    @given(probe=probes)
    def case(probe: Probe) -> None:
        arena.send(probe)

    case()


def plant_canaries(tmp_path: Path, jobs_dir: Path) -> None:
    """Files a traversal would reach: beside the jobs folder and inside it."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    for folder in (tmp_path, jobs_dir):
        (folder / "secret-canary.txt").write_bytes(CANARY)
        (folder / "image.png").write_bytes(PNG_SIGNATURE + CANARY)


def proper(arena: Arena, guarded: bool, token: bool = True) -> Access:
    """What the dashboard's own page sends, with the token where one is needed."""
    headers = [("Host", f"127.0.0.1:{arena.port(guarded)}")]
    if guarded and token:
        headers.append(("Authorization", f"Bearer {TOKEN}"))
    return Access(tuple(headers), host_ok=True, same_site=True, credential=True)


def log_in(arena: Arena) -> str:
    """The session cookie, got the way a browser gets it."""
    probe = Probe(
        "arena",
        True,
        "POST",
        "/login",
        proper(arena, True, token=False),  # the form carries the token
        content_type="application/x-www-form-urlencoded",
        body=form_token(TOKEN),
    )
    answer = send(arena.guarded.port, probe)
    assert answer.status == 303
    cookie = answer.headers["Set-Cookie"].split(";")[0]
    name, _, value = cookie.partition("=")
    assert name == "fraktal_session" and TOKEN not in value
    return value


def check_the_worker_was_served(arena: Arena) -> None:
    """Every job of the worker exact, its picture right, everyone still there."""
    master = arena.master
    for spec in arena.specs:
        arena.running.wait_for(
            lambda spec=spec: spec.key() in master.written, 120, f"job {spec.key()}"
        )

    for spec in arena.specs:
        folder = arena.jobs_dir / spec.key()
        expected = reference(spec)
        assert np.array_equal(open_raw(folder, spec), expected), spec.key()
        assert each_tile_journaled_once(folder, spec)
        picture = fetch(arena, f"/api/jobs/{spec.key()}/image.png")
        assert picture.status == 200
        pixels = np.asarray(Image.open(io.BytesIO(picture.body)).convert("RGB"))
        assert np.array_equal(pixels, colourize(expected, "nocturne"))

    for guarded in (False, True):
        healthy = wait_until(
            lambda guarded=guarded: fetch(arena, "/healthz", guarded).status == 200,
            30,
            "/healthz to answer 200",
            step=0.5,
        )
        assert healthy
    with master.lock:
        steady = [w for w in master.scheduler.workers.values() if w.name == "steady"]
    assert len(steady) == 1 and steady[0].connected
    assert not arena.log.records, [r.getMessage() for r in arena.log.records]


def fetch(arena: Arena, target: str, guarded: bool = False) -> Answer:
    probe = Probe("arena", guarded, "GET", target, proper(arena, guarded))
    return send(arena.port(guarded), probe)
