"""``chumon dashboard``: rq-dashboard, JSON-aware, on localhost, optionally behind basic auth.

rq-dashboard 0.9 has one global serializer switch, which this turns to JSON. Some of its
code still reads jobs with rq's default, binary serializer, and a few of rq's assumptions do
not hold for chumon's data (tests/e2e/test_dashboard.py checks each point):

- its Workers view reads workers without a serializer, so a worker's current job is decoded
  with rq's default and the view answers HTTP 500 while a worker is busy on a JSON job (see
  shared/FACTS.md). It also answers 500 when ``current_job`` is empty (chumon's idle
  heartbeat writes it so) or names a job that has just expired;
- its job page fetches the job without a serializer: rq then unpickles the job's ``meta``,
  so whoever can write to Redis could run code in the dashboard;
- a dead letter keeps its origin (``q``) while it sits on ``q.dlq``, and rq's
  ``Queue.fetch_job`` drops jobs of another origin: the dead-letter queue's page was empty;
- its Requeue buttons used rq's requeue, which pickled the job's meta and left the job on
  ``q.dlq`` as well. They now do what ``chumon dlq requeue`` does.

The least invasive fix: give the dashboard's module its own ``Worker``, ``Queue``, ``Job``
and ``requeue_job``, thin subclasses and one function. No file of the package changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rq_dashboard.web
from flask import Flask
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import Worker
from rq_dashboard.cli import make_flask_app

from chumon.scheduling import JSONJob
from workers.deadletter import DeadLetters
from workers.keys import is_dead_letter_queue, origin_of_dead_letter_queue
from workers.settings import RuntimeSettings


class JSONWorker(Worker):
    """rq's Worker, read back with the JSON serializer (so its current job decodes)."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs["serializer"] = JSONSerializer
        return list(super().all(*args, **kwargs))

    def get_current_job(self) -> Job | None:
        """The running job; None when the worker is idle or the job is already gone."""
        if not self.get_current_job_id():
            return None
        try:
            return super().get_current_job()
        except NoSuchJobError:
            return None


class DashboardQueue(Queue):
    """rq's Queue, except that a dead-letter queue ``<q>.dlq`` lists its jobs (their origin is ``q``)."""

    def fetch_job(self, job_id: str) -> Job | None:
        if not is_dead_letter_queue(self.name):
            return super().fetch_job(job_id)
        try:
            job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            self.remove(job_id)  # what rq does for any queue: a deleted job leaves the list
            return None
        return job if job.origin in (self.name, origin_of_dead_letter_queue(self.name)) else None


def dead_letter_requeue(settings: RuntimeSettings) -> Callable[..., None]:
    """The dashboard's ``requeue_job``: chumon's dead-letter requeue (fresh attempt budget)."""

    def requeue_job(job_id: str, connection: Redis, serializer: Any = None) -> None:
        DeadLetters(connection, settings).requeue([job_id])

    return requeue_job


def make_app(
    redis_url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    settings: RuntimeSettings | None = None,
) -> Flask:
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONWorker
    rq_dashboard.web.Queue = DashboardQueue
    rq_dashboard.web.Job = JSONJob
    rq_dashboard.web.requeue_job = dead_letter_requeue(settings or RuntimeSettings(redis_url=redis_url))
    app: Flask = make_flask_app(None, username, password, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    rq_dashboard.web.setup_rq_connection(app)
    return app


def run(
    redis_url: str,
    *,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    settings: RuntimeSettings | None = None,
) -> None:
    app = make_app(redis_url, username=username, password=password, settings=settings)
    app.run(host=host, port=port, threaded=True)
