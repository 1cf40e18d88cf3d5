"""``chumon dashboard``: rq-dashboard, JSON-aware, on localhost, optionally behind basic auth.

rq-dashboard 0.9 has one global serializer switch, which this turns to JSON. Its Workers
view still loads each worker's current job with rq's default (pickle) serializer, because
it calls ``Worker.all(connection=...)`` without one, and answers HTTP 500 whenever a worker
is busy on a JSON job (shared/FACTS.md). The least invasive fix: give the dashboard's module
a ``Worker`` whose ``all()`` passes the JSON serializer. No file of the package changes.
"""

from __future__ import annotations

from typing import Any

import rq_dashboard.web
from flask import Flask
from rq.serializers import JSONSerializer
from rq.worker import Worker
from rq_dashboard.cli import make_flask_app


class JSONWorker(Worker):
    """rq's Worker, read back with the JSON serializer (so its current job decodes)."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs["serializer"] = JSONSerializer
        return list(super().all(*args, **kwargs))


def make_app(redis_url: str, *, username: str | None = None, password: str | None = None) -> Flask:
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker
    app: Flask = make_flask_app(None, username, password, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    rq_dashboard.web.setup_rq_connection(app)
    return app


def run(redis_url: str, *, host: str, port: int, username: str | None, password: str | None) -> None:
    app = make_app(redis_url, username=username, password=password)
    app.run(host=host, port=port, threaded=True)
