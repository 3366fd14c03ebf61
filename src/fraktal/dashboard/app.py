"""The dashboard: a Flask app that shows the master's state and steers it.

Theory of operation
-------------------
The app runs in waitress' threads beside the master's event loop. It never
touches the scheduler, a socket or a job folder itself: it calls the
master's thread-safe methods (`snapshot`, `job_info`, `preview`, `picture`,
`healthy`, `submit`, `cancel`), each of which holds `Master.lock` only while
it copies plain data, so a slow browser can never stall the workers.

The page is static HTML and JavaScript that polls the JSON API under
``/api/``; the API is also the interface for scripts, and the README
documents it. Every answer about a bad request is JSON with one ``error``
line that says what was wrong and what is allowed, the same line the CLI
prints for the same mistake.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import (
    Flask,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
)
from PIL import Image
from werkzeug.exceptions import HTTPException

from fraktal import __version__
from fraktal.dashboard import auth
from fraktal.dashboard.metrics import CONTENT_TYPE, render_metrics
from fraktal.dashboard.submission import parse_submission
from fraktal.errors import FraktalError, UnknownJobError, UsageError
from fraktal.master.service import Master
from fraktal.render.palette import palette_names
from fraktal.render.spec import DEFAULT_MAX_ITER, DEFAULT_SPAN

logger = logging.getLogger(__name__)

PREVIEW_SIDE = (16, 2048, 640)  # smallest, largest, default
PREVIEW_CACHE = 64
PREVIEW_CACHE_BYTES = 32 * 1024 * 1024
EVENTS_LIMIT = (1, 500, 100)
HEALTH_TIMEOUT = 2.0

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers send "Origin: null" on our own forms.
    "Referrer-Policy": "same-origin",
}


class ApiError(Exception):
    """An answer with an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    master: Master, *, token: str | None = None, local_only: bool = False
) -> Flask:
    """The dashboard for ``master``.

    :param token: the master's token; submit and cancel then need it.
    :param local_only: answer only requests addressed to a loopback name, for
        a dashboard that listens on loopback (see `fraktal.dashboard.auth`).
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    guard = auth.Guard(token)

    _guard_requests(app, local_only)
    _handle_errors(app)
    _pages(app, guard)
    _read_api(app, master, guard)
    _write_api(app, master, guard)
    _operations(app, master)
    return app


def _guard_requests(app: Flask, local_only: bool) -> None:
    @app.before_request
    def check_host_and_origin() -> Any:
        if local_only and auth.host_name(request.host) not in auth.LOOPBACK_NAMES:
            raise ApiError(
                400,
                f"this dashboard listens on loopback and answers only to "
                f"{', '.join(sorted(auth.LOOPBACK_NAMES))}, not {request.host!r}",
            )
        if request.method == "POST":
            origin = auth.foreign_origin(request)
            if origin is not None:
                raise ApiError(403, f"refused a write from {origin!r}, not this page")
        return None

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/") and response.mimetype != "image/png":
            response.headers["Cache-Control"] = "no-store"
        return response


def _handle_errors(app: Flask) -> None:
    def answer(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return answer(exc.status, str(exc))

    @app.errorhandler(UsageError)
    def usage_error(exc: UsageError) -> tuple[Response, int]:
        return answer(400, str(exc))

    @app.errorhandler(UnknownJobError)
    def unknown_job(exc: UnknownJobError) -> tuple[Response, int]:
        return answer(404, str(exc))

    @app.errorhandler(FraktalError)
    def conflict(exc: FraktalError) -> tuple[Response, int]:
        return answer(409, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return answer(exc.code or 500, f"{exc.name}: {exc.description}")
        return exc


def _pages(app: Flask, guard: auth.Guard) -> None:
    @app.get("/")
    def index() -> str:
        return render_template(
            "index.html",
            auth_required=guard.required,
            authenticated=guard.authenticated(request),
            palettes=palette_names(),
            defaults={"span": DEFAULT_SPAN, "max_iter": DEFAULT_MAX_ITER},
            version=__version__,
        )

    @app.get("/login")
    def login_form() -> Any:
        if not guard.required:
            return redirect("/")
        return render_template("login.html", failed=False)

    @app.post("/login")
    def login() -> Any:
        if not guard.required:
            return redirect("/")
        if not guard.check_token(request.form.get("token", "")):
            logger.warning("dashboard: failed login from %s", request.remote_addr)
            return render_template("login.html", failed=True), 401
        response = redirect("/", code=303)
        response.set_cookie(
            auth.COOKIE, guard.session_value(), httponly=True, samesite="Strict"
        )
        return response

    @app.post("/logout")
    def logout() -> Any:
        response = redirect("/", code=303)
        response.delete_cookie(auth.COOKIE, httponly=True, samesite="Strict")
        return response


def _read_api(app: Flask, master: Master, guard: auth.Guard) -> None:
    previews = PngCache(PREVIEW_CACHE)

    @app.get("/api/status")
    def status() -> Response:
        snapshot = master.snapshot()
        return jsonify(
            time=snapshot["time"],
            version=__version__,
            job=snapshot["job"],
            queue=snapshot["queue"],
            workers_connected=snapshot["workers_connected"],
            workers_by_status=snapshot["workers_by_status"],
            totals=snapshot["totals"],
            auth={
                "required": guard.required,
                "authenticated": guard.authenticated(request),
            },
        )

    @app.get("/api/workers")
    def workers() -> Response:
        snapshot = master.snapshot()
        return jsonify(time=snapshot["time"], workers=snapshot["workers"])

    @app.get("/api/jobs")
    def jobs() -> Response:
        snapshot = master.snapshot()
        return jsonify(time=snapshot["time"], jobs=snapshot["jobs"])

    @app.get("/api/jobs/<job_id>")
    def job(job_id: str) -> Response:
        return jsonify(job=master.job_info(job_id))

    @app.get("/api/jobs/<job_id>/preview.png")
    def preview(job_id: str) -> Response:
        side = _int_arg("size", *PREVIEW_SIDE)
        info = master.job_info(job_id)
        # A preview changes only with these; the cache spares re-encoding.
        key = (
            job_id,
            info["status"],
            info["tiles"]["done"],
            info["params"]["palette"],
            info["params"]["equalize"],
            side,
        )
        png = previews.get(key)
        if png is None:
            png = encode_png(master.preview(job_id, side))
            previews.put(key, png)
        return Response(
            png, mimetype="image/png", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/api/jobs/<job_id>/image.png")
    def image(job_id: str) -> Any:
        path = master.picture(job_id)
        if path is None or not path.is_file():
            status = master.job_info(job_id)["status"]
            raise ApiError(
                404, f"job {job_id} has no finished picture (the job is {status})"
            )
        return send_file(
            path,
            mimetype="image/png",
            as_attachment=True,
            download_name=f"fraktal-{job_id}.png",
        )

    @app.get("/api/events")
    def events() -> Response:
        after = _int_arg("after", 0, 2**62, 0)
        limit = _int_arg("limit", *EVENTS_LIMIT)
        snapshot = master.snapshot(events_after=after)
        recent = snapshot["events"][-limit:]
        last = recent[-1]["seq"] if recent else after
        return jsonify(time=snapshot["time"], events=recent, last=last)


def _write_api(app: Flask, master: Master, guard: auth.Guard) -> None:
    def needs_token(view: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(view)
        def checked() -> Any:
            if not guard.authenticated(request):
                raise ApiError(
                    401,
                    "submit and cancel need the master's token: send the header "
                    "'Authorization: Bearer TOKEN' or log in at /login",
                )
            return view()

        return checked

    @app.post("/api/submit")
    @needs_token
    def submit() -> tuple[Response, int]:
        submission = parse_submission(_json_body())
        output = master.folder_output(
            submission.spec, submission.palette, submission.equalize
        )
        job = master.submit(submission.spec, output)
        logger.info("dashboard: %s submitted job %s", request.remote_addr, job.id)
        return jsonify(job=master.job_info(job.id)), 202

    @app.post("/api/cancel")
    @needs_token
    def cancel() -> Response:
        body = _json_body()
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) - {"job_id"} or job_id == "":
            raise UsageError('cancel takes {"job_id": "ID"}, or {} for the running job')
        if job_id is not None and not isinstance(job_id, str):
            raise UsageError(f"job_id must be a job's id as text, got {job_id!r}")
        job_id = job_id or _running_job(master)
        status = master.job_info(job_id)["status"]
        if status not in ("queued", "running"):
            raise ApiError(
                409,
                f"job {job_id} is already {status}; only queued or running "
                f"jobs can be cancelled",
            )
        master.cancel(job_id)
        logger.info("dashboard: %s cancelled job %s", request.remote_addr, job_id)
        return jsonify(job=master.job_info(job_id))


def _operations(app: Flask, master: Master) -> None:
    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        if master.healthy(HEALTH_TIMEOUT):
            return jsonify(status="ok"), 200
        return jsonify(status="unavailable", error="the master is not serving"), 503

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render_metrics(master.snapshot()), content_type=CONTENT_TYPE)


def _running_job(master: Master) -> str:
    job = master.snapshot()["job"]
    if job is None:
        raise ApiError(409, "no job is running; name a queued job with job_id")
    return str(job["id"])


def _json_body() -> Any:
    """The decoded body; a write must be sent as JSON and must be JSON."""
    if not request.is_json:
        raise ApiError(
            415, "send a JSON object with the header Content-Type: application/json"
        )
    try:
        return json.loads(request.get_data())
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not JSON text in UTF-8, -16 or -32") from None
    except (ValueError, RecursionError):
        # Numbers of thousands of digits, or nesting deeper than Python recurses.
        raise ApiError(
            400,
            "the body is JSON too large to read: a number far too long, "
            "or arrays and objects nested too deeply",
        ) from None


def _int_arg(name: str, low: int, high: int, default: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    # ASCII digits only: isdigit() alone takes "²", which int() refuses, and
    # int() also refuses thousands of digits, so those are counted first.
    digits = text.lstrip("0") or "0"
    if (
        not (text.isascii() and text.isdigit())
        or len(digits) > len(str(high))
        or not low <= int(digits) <= high
    ):
        raise UsageError(
            f"{name} must be a whole number from {low} to {high}, got {text!r}"
        )
    return int(digits)


def encode_png(rgb: Any) -> bytes:
    """PNG bytes of an RGB array, quickly compressed: previews change often."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class PngCache:
    """A least-recently-used store of encoded previews, thread-safe.

    Bounded in bytes as well as entries: anyone may ask for previews of any
    size, and a deep zoom at 2048 pixels encodes to several megabytes.
    """

    def __init__(self, capacity: int, max_bytes: int = PREVIEW_CACHE_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def put(self, key: tuple[Any, ...], png: bytes) -> None:
        with self._lock:
            self._bytes += len(png) - len(self._items.pop(key, b""))
            self._items[key] = png
            while len(self._items) > self.capacity or self._bytes > self.max_bytes:
                self._bytes -= len(self._items.popitem(last=False)[1])

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes
