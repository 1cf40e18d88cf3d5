"""Who may use the dashboard, and how: checked before any view runs, on every request.

In this order, each refusal final:

1. **Host** (DNS rebinding): the ``Host`` header must name localhost, an IP address, the
   bind address or one of ``CHUMON_DASHBOARD__ALLOWED_HOSTS``; else 403. A page of
   ``evil.example`` whose name is re-pointed at 127.0.0.1 sends ``Host: evil.example``. An IP
   address cannot be re-pointed, so it is always accepted.
2. **Basic auth**, when configured: user name and password compared in constant time
   (``hmac.compare_digest`` on their SHA-256, so not even the length leaks); else 401.
3. **Actions** (requeue, delete, empty, compact) take POST only; GET, HEAD and the rest get
   403. A POST must carry the page's CSRF token in ``X-CSRFToken`` (every page sets it for
   jQuery's requests) and must not come from another site (``Sec-Fetch-Site``, ``Origin``,
   else ``Referer``, must match the ``Host``); else 403. Basic auth is no defence there: a
   browser sends cached credentials with a cross-site form too.

Every answer carries headers that keep it out of other sites' pages: a Content-Security-Policy
(scripts from the dashboard itself or its inline block with this response's nonce: an
injected ``<script>`` or ``onerror=`` would not run even if it reached the page),
``frame-ancestors 'none'`` (no clickjacking of the buttons), ``nosniff``, ``no-store``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, Response, g, request

ACTIONS = frozenset(
    {
        "rq_dashboard.requeue_job_view",
        "rq_dashboard.delete_job_view",
        "rq_dashboard.requeue_all",
        "rq_dashboard.empty_queue",
        "rq_dashboard.compact_queue",
    }
)
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
CSP = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)  # 'unsafe-eval': rq-dashboard's templates are compiled by underscore.js with new Function()


def host_name(host_header: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port or brackets; None if malformed."""
    if not host_header or any(c in host_header for c in "/?#@\\ "):
        return None
    try:
        parts = urlsplit("//" + host_header)
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError:
        return None
    return parts.hostname or None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Guard:
    """The checks above for one dashboard: its host names, its credentials, its CSRF token."""

    allowed_hosts: frozenset[str]
    username: str | None = None
    password: str | None = None
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def of(
        cls, bind: str, allowed_hosts: tuple[str, ...], username: str | None, password: str | None
    ) -> Guard:
        names = set(LOCAL_NAMES)
        if bind.strip("[]") not in WILDCARDS:
            names.add(bind.strip("[]").lower())
        names.update(n for n in (host_name(h) for h in allowed_hosts) if n)
        return cls(frozenset(names), username or None, password or None)

    def install(self, app: Flask) -> None:
        app.before_request(self.check)
        app.after_request(self.protect)

    # -- the checks -------------------------------------------------------------------------
    def check(self) -> Response | None:
        g.csp_nonce = secrets.token_urlsafe(16)
        name = host_name(request.headers.get("Host", ""))
        if name is None or not (name in self.allowed_hosts or is_ip(name)):
            return refuse(
                403,
                "unknown Host header: add the name to CHUMON_DASHBOARD__ALLOWED_HOSTS "
                "if this dashboard is meant to answer to it",
            )
        if self.username is not None and not self.authenticated():
            return Response(
                "authentication required\n",
                401,
                {"WWW-Authenticate": 'Basic realm="chumon dashboard", charset="UTF-8"'},
                mimetype="text/plain",
            )
        if request.endpoint in ACTIONS:
            if request.method != "POST":
                return refuse(403, "dashboard actions take POST only")
            if not self.same_origin():
                return refuse(403, "cross-site request refused")
            if not hmac.compare_digest(
                _digest(request.headers.get("X-CSRFToken", "")), _digest(self.csrf_token)
            ):
                return refuse(403, "missing or wrong CSRF token: reload the page")
        return None

    def authenticated(self) -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        user_ok = hmac.compare_digest(_digest(auth.username or ""), _digest(self.username or ""))
        password_ok = hmac.compare_digest(_digest(auth.password or ""), _digest(self.password or ""))
        return user_ok & password_ok  # both compared, always

    def same_origin(self) -> bool:
        """No browser marks this request as coming from another site."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return False
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if origin is None:
            return True  # not sent by a browser's page (the token is still required)
        parts = urlsplit(origin)
        host = request.headers.get("Host", "")
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()

    # -- every answer -----------------------------------------------------------------------
    def protect(self, response: Response) -> Response:
        nonce = g.get("csp_nonce") or secrets.token_urlsafe(16)
        response.headers["Content-Security-Policy"] = CSP.format(nonce=nonce)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response


def refuse(status: int, reason: str) -> Response:
    return Response(reason + "\n", status, mimetype="text/plain")
