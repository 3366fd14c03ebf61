"""Who may submit and cancel: the master's token, by header or by cookie.

Reading is open to whoever reaches the dashboard. Writing needs the token
when the master has one, either as ``Authorization: Bearer TOKEN`` or as the
session cookie that the login form sets. The cookie holds an HMAC of a fixed
label under the token, never the token itself; it proves knowledge of the
token and becomes worthless when the master's token changes.

A master without a token lets anyone write; that is why it listens on
loopback unless told otherwise. Two further checks keep other web sites from
writing through a visitor's browser: a write with an ``Origin`` header must
come from the dashboard's own origin, and a dashboard on loopback answers
only to loopback host names, which defeats DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Request

COOKIE = "fraktal_session"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
_LABEL = b"fraktal dashboard session v1"


class Guard:
    """Decides whether a request may change anything."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    @property
    def required(self) -> bool:
        return self.token is not None

    def session_value(self) -> str:
        """The cookie value that proves the token; only valid with a token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), _LABEL, hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            candidate.encode(), self.token.encode()
        )

    def authenticated(self, request: Request) -> bool:
        """True when the request proves the token (or none is needed)."""
        if self.token is None:
            return True
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.check_token(credential.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())


def foreign_origin(request: Request) -> str | None:
    """The origin of a cross-site request, or None when it is our own page."""
    origin = request.headers.get("Origin")
    if origin is not None and _netloc(origin) != request.host:
        return origin
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return origin or "another site"
    return None


def _netloc(url: str) -> str | None:
    """The host and port of ``url``; None when it cannot be a URL at all."""
    try:
        return urlsplit(url).netloc
    except ValueError:  # such as "http://[::1", an unclosed IPv6 address
        return None


def host_name(host: str) -> str:
    """The name in a Host header, without the port; IPv6 keeps its brackets."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0]
