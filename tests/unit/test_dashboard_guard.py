"""The dashboard's guard and start-up checks, without a server: Host parsing, which names are
let in, which settings are refused, and the headers every answer carries."""

from __future__ import annotations

import re

import fakeredis
import pytest
from pydantic import SecretStr

from chumon.dashboard import Guard, make_app
from chumon.dashboard.guard import host_name
from chumon.dashboard.serve import Refused, is_loopback, options
from chumon.settings import DashboardConfig
from workers.settings import RuntimeSettings


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:9181", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:9181", "::1"),
        ("dash.example.com:443", "dash.example.com"),
        ("", None),
        ("127.0.0.1:port", None),
        ("evil.example/path", None),
        ("user@127.0.0.1", None),
        ("127.0.0.1 evil", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def client(**guard: object) -> object:
    settings = RuntimeSettings(redis_url="redis://127.0.0.1:1/0")
    values = {"bind": "127.0.0.1", "allowed_hosts": (), "username": None, "password": None, **guard}
    app = make_app(fakeredis.FakeRedis(), settings, Guard.of(**values))  # type: ignore[arg-type]
    return app.test_client()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:9181", 200),
        ("localhost:9181", 200),
        ("[::1]:9181", 200),
        ("10.1.2.3:9181", 200),  # an IP address cannot be re-pointed by DNS
        ("dash.example.com", 200),  # allowed below
        ("DASH.example.com:8443", 200),
        ("evil.example:9181", 403),
        ("localhost.evil.example", 403),
        ("127.0.0.1.nip.io", 403),
        ("dash.example.com.evil.example", 403),
        ("", 403),
    ],
)
def test_only_known_hosts_are_answered(host: str, status: int) -> None:
    app = client(allowed_hosts=("dash.example.com",))
    assert app.get("/0/data/queues.json", headers={"Host": host}).status_code == status  # type: ignore[attr-defined]


def test_every_answer_carries_a_csp_whose_nonce_is_the_inline_scripts() -> None:
    app = client()
    page = app.get("/", headers={"Host": "127.0.0.1"})  # type: ignore[attr-defined]
    csp = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'nonce="{nonce.group(1)}"'.encode() in page.data
    scripts = re.search(r"script-src ([^;]*)", csp)
    assert scripts and "unsafe-inline" not in scripts.group(1)  # no injected handler or script runs
    assert "frame-ancestors 'none'" in csp
    assert (page.headers["X-Frame-Options"], page.headers["X-Content-Type-Options"]) == ("DENY", "nosniff")
    refused = app.get("/", headers={"Host": "evil.example"})  # type: ignore[attr-defined]
    assert refused.status_code == 403 and "Content-Security-Policy" in refused.headers


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("dash.example.com", False), ("", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_settings_that_fail_open_are_refused_naming_the_setting() -> None:
    with pytest.raises(
        Refused, match="CHUMON_DASHBOARD__PASSWORD is set but CHUMON_DASHBOARD__USERNAME is not"
    ):
        options(DashboardConfig(password=SecretStr("x")))
    with pytest.raises(
        Refused, match="CHUMON_DASHBOARD__USERNAME is set but CHUMON_DASHBOARD__PASSWORD is not"
    ):
        options(DashboardConfig(username="ops", password=SecretStr("")))
    with pytest.raises(Refused, match=r"listen on 0\.0\.0\.0 \(CHUMON_DASHBOARD__HOST or --host\)"):
        options(DashboardConfig(host="0.0.0.0"))
    with pytest.raises(Refused, match="CHUMON_DASHBOARD__USERNAME and CHUMON_DASHBOARD__PASSWORD"):
        options(DashboardConfig(), host="::")
    opened = options(DashboardConfig(host="0.0.0.0", username="ops", password=SecretStr("x")), port=9999)
    assert (opened.host, opened.port, opened.username, opened.password) == ("0.0.0.0", 9999, "ops", "x")
    assert options(DashboardConfig()).username is None
