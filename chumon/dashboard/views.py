"""rq-dashboard's URLs, answered by chumon: the same pages and JSON, read with ``reader``.

The routes, endpoint names and JSON shapes are rq-dashboard 0.9's, so its JavaScript (served
unchanged from its package, as are its CSS and most of its templates) drives these views as it
drives its own. What differs:

- every JSON answer is masked as chumon's logs are (emails, payment tokens, URL passwords);
- one Redis server (instance 0); any other instance number is a 404, as is a job without a
  hash, a queue rq does not list, an unknown registry or a malformed page number;
- the actions act on dead letters only, the way ``chumon dlq requeue`` and ``chumon dlq
  purge`` do; every other job belongs to the workers (409 says so). Each action is logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from math import ceil
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, render_template, request, url_for
from rq.version import VERSION as RQ_VERSION
from rq_dashboard.version import VERSION as RQ_DASHBOARD_VERSION

from chumon.dashboard.reader import LISTS, Reader
from chumon.logs import mask, mask_url
from workers.control import Control
from workers.deadletter import DeadLetters
from workers.keys import is_dead_letter_queue, origin_of_dead_letter_queue
from workers.settings import RuntimeSettings

log = logging.getLogger("chumon.dashboard")
PACKAGE = files("rq_dashboard")
PER_PAGE_MAX = 200  # the job list's "On page" field allows 1-200
POLL_INTERVAL_MS = 2500  # rq-dashboard's default

blueprint = Blueprint(
    "rq_dashboard",
    __name__,
    template_folder=str(PACKAGE / "templates"),
    static_folder=str(PACKAGE / "static"),
)


# -- plumbing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What the views need, built once per app (``app.extensions["chumon.dashboard"]``)."""

    reader: Reader
    settings: RuntimeSettings
    csrf: str


def context() -> Context:
    found: Context = current_app.extensions["chumon.dashboard"]
    return found


def reader() -> Reader:
    return context().reader


def dead_letters() -> DeadLetters:
    return DeadLetters(context().reader.redis, context().settings)


def answer(data: Any, status: int = 200) -> Response:
    """JSON, masked as the logs are."""
    return Response(mask(json.dumps(data, default=str)), status, mimetype="application/json")


def instance(number: int) -> None:
    if number != 0:
        abort(404)


def render_page(template: str, **values: Any) -> str:
    redis_url = context().settings.redis_url
    return render_template(
        template,
        current_instance=0,
        instance_list=[mask_url(redis_url)],
        rq_url_prefix=url_for("rq_dashboard.queues_overview"),  # from any blueprint (orders.py)
        rq_dashboard_version=RQ_DASHBOARD_VERSION,
        rq_version=RQ_VERSION,
        deprecation_options_usage=False,
        **values,
    )


def existing_queue(name: str) -> str:
    if name not in reader().queue_names():
        abort(404)
    return name


@blueprint.app_context_processor
def common() -> dict[str, Any]:
    nonce = g.get("csp_nonce", "")
    return {"poll_interval": POLL_INTERVAL_MS, "csp_nonce": nonce, "csrf_token": context().csrf}


# -- pages ------------------------------------------------------------------------------------
@blueprint.route("/", defaults={"instance_number": 0})
@blueprint.route("/<int:instance_number>/")
@blueprint.route("/<int:instance_number>/view")
@blueprint.route("/<int:instance_number>/view/queues")
def queues_overview(instance_number: int) -> str:
    instance(instance_number)
    return render_page("rq_dashboard/queues.html", active_tab="queues")


@blueprint.route("/<int:instance_number>/view/workers")
def workers_overview(instance_number: int) -> str:
    instance(instance_number)
    return render_page("rq_dashboard/workers.html", active_tab="workers")


@blueprint.route(
    "/<int:instance_number>/view/jobs",
    defaults={"queue_name": None, "registry_name": "queued", "per_page": 8, "order": "asc", "page": 1},
)
@blueprint.route(
    "/<int:instance_number>/view/jobs/<queue_name>/<registry_name>/<int:per_page>/<order>/<int:page>"
)
def jobs_overview(
    instance_number: int, queue_name: str | None, registry_name: str, per_page: int, order: str, page: int
) -> str:
    instance(instance_number)
    names = reader().queue_names()
    if queue_name is None:
        queue_name = names[0] if names else "default"
    elif queue_name not in names:
        abort(404)
    if registry_name not in LISTS or order not in ("asc", "dsc") or not 1 <= per_page <= PER_PAGE_MAX:
        abort(404)
    dead = is_dead_letter_queue(queue_name)
    return render_page(
        "rq_dashboard/jobs.html",
        active_tab="jobs",
        queues=[{"name": name} for name in names],
        queue={"name": queue_name},
        registry_name=registry_name,
        per_page=per_page,
        order=order,
        page=page,
        dead_letter_queue=dead,
        origin=origin_of_dead_letter_queue(queue_name) if dead else queue_name,
        enable_delete=(dead and registry_name == "queued") or registry_name == "failed",
    )


@blueprint.route("/<int:instance_number>/view/job/<path:job_id>")
def job_view(instance_number: int, job_id: str) -> str:
    instance(instance_number)
    job = reader().job(job_id)
    if job is None:
        abort(404)
    return render_page("rq_dashboard/job.html", id=job_id, enable_delete=job.dead_letter, job=job.summary())


@blueprint.route("/favicon.ico")
def favicon() -> Response:
    return blueprint.send_static_file("favicon.ico")


# -- data -------------------------------------------------------------------------------------
@blueprint.route("/<int:instance_number>/data/queues.json")
def list_queues(instance_number: int) -> Response:
    instance(instance_number)
    rows = []
    found = reader().queues()
    flows = Control(context().reader.redis, context().settings).flows([q.name for q in found])
    for queue, flow in zip(found, flows, strict=True):
        links = {
            f"{registry}_url": url_for(
                ".jobs_overview",
                instance_number=0,
                queue_name=queue.name,
                registry_name=registry,
                per_page=8,
                order="asc",
                page=1,
            )
            for registry in LISTS
        }
        counts = {f"{registry}_job_registry_count": n for registry, n in queue.registries.items()}
        rows.append(
            {
                "name": queue.name,
                "count": queue.queued,
                **counts,
                **links,
                "dead_letter": queue.dead_letter,
                "origin": queue.origin,
                "paused": flow.paused,
                "prioritized": flow.prioritized,
                "rate_limit": flow.rate_limit,
                "throttled_for": round(flow.throttled_for, 1),
            }
        )
    return answer({"queues": rows})


@blueprint.route(
    "/<int:instance_number>/data/jobs/<queue_name>/<registry_name>/<per_page>/<order>/<page>.json"
)
def list_jobs(
    instance_number: int, queue_name: str, registry_name: str, per_page: str, order: str, page: str
) -> Response:
    instance(instance_number)
    existing_queue(queue_name)
    if registry_name not in LISTS or order not in ("asc", "dsc"):
        abort(404)
    if not (per_page.isdigit() and page.isdigit()):
        abort(404)
    size, current = int(per_page), int(page)
    if not (1 <= size <= PER_PAGE_MAX and current >= 1):
        abort(404)
    data = reader()
    total = data.count(queue_name, registry_name)
    start = (current - 1) * size
    ids = data.job_ids(queue_name, registry_name, start, start + size, descending=order == "dsc")
    rows = []
    for job_id, job in zip(ids, data.jobs(ids), strict=True):
        if job is None:
            rows.append({"id": job_id, "description": "(no job hash: the id is listed but the job is gone)"})
        else:
            rows.append(job.summary())
    return answer(
        {
            "name": queue_name,
            "registry_name": registry_name,
            "jobs": rows,
            "pagination": pagination(queue_name, registry_name, size, order, current, total),
        }
    )


def pagination(queue: str, registry: str, size: int, order: str, current: int, total: int) -> dict[str, Any]:
    """rq-dashboard's pagination block: up to ten page links around the current one."""

    def link(number: int) -> dict[str, Any]:
        url = url_for(
            ".jobs_overview",
            instance_number=0,
            queue_name=queue,
            registry_name=registry,
            per_page=size,
            order=order,
            page=max(number, 1),
        )
        return {"number": number, "url": url}

    last = ceil(total / size)
    first_shown = max(0, min(last - 10, current - 1 - 5))
    block: dict[str, Any] = {
        "current_page": current,
        "num_pages": last,
        "pages_in_window": [link(n) for n in range(first_shown + 1, min(last, first_shown + 10) + 1)],
        "first_page": link(1),
        "last_page": link(last),
    }
    if current > 1:
        block["prev_page"] = link(current - 1)
    if current < last:
        block["next_page"] = link(current + 1)
    return block


@blueprint.route("/<int:instance_number>/data/job/<path:job_id>.json")
def job_info(instance_number: int, job_id: str) -> Response:
    instance(instance_number)
    job = reader().job(job_id)
    if job is None:
        return answer({"status": "ERROR", "message": "no such job"}, 404)
    return answer(job.details())


@blueprint.route("/<int:instance_number>/data/workers.json")
def list_workers(instance_number: int) -> Response:
    instance(instance_number)
    return answer({"workers": reader().workers()})


# -- actions (the guard has checked method, origin and CSRF token) ------------------------------
def by_whom() -> str:
    auth = request.authorization
    return (
        f"{auth.username} from {request.remote_addr}" if auth and auth.username else str(request.remote_addr)
    )


def not_a_dead_letter(job_id: str) -> Response:
    return answer({"status": "ERROR", "message": f"{job_id} is not a dead letter: the workers own it"}, 409)


@blueprint.route("/job/<path:job_id>/requeue", methods=["GET", "POST"])
def requeue_job_view(job_id: str) -> Response:
    if not dead_letters().requeue([job_id]):
        return not_a_dead_letter(job_id)
    log.info("dashboard: dead letter %s requeued by %s", job_id, by_whom())
    return answer({"status": "OK"})


@blueprint.route("/job/<path:job_id>/delete", methods=["GET", "POST"])
def delete_job_view(job_id: str) -> Response:
    job = reader().job(job_id)
    if job is None or not job.dead_letter:
        return not_a_dead_letter(job_id)
    letters = dead_letters()
    removed = letters.remove(job.origin, [job_id])
    if not removed:
        return not_a_dead_letter(job_id)
    log.info("dashboard: dead letter %s deleted by %s", job_id, by_whom())
    return answer({"status": "OK"})


@blueprint.route("/requeue/<queue_name>", methods=["GET", "POST"])
def requeue_all(queue_name: str) -> Response:
    origin = origin_of_dead_letter_queue(queue_name) if is_dead_letter_queue(queue_name) else queue_name
    requeued = dead_letters().requeue(all_=True, queue=origin)
    log.info("dashboard: %d dead letter(s) of %s requeued by %s", len(requeued), origin, by_whom())
    return answer({"status": "OK", "count": len(requeued)})


@blueprint.route("/queue/<queue_name>/<registry_name>/empty", methods=["GET", "POST"])
def empty_queue(queue_name: str, registry_name: str) -> Response:
    dead = is_dead_letter_queue(queue_name)
    if not ((dead and registry_name == "queued") or (not dead and registry_name == "failed")):
        message = "only dead letters can be emptied from the dashboard: the workers own every other job"
        return answer({"status": "ERROR", "message": message}, 409)
    origin = origin_of_dead_letter_queue(queue_name) if dead else queue_name
    removed = dead_letters().purge(origin)
    log.info("dashboard: %d dead letter(s) of %s deleted by %s", removed, origin, by_whom())
    return answer({"status": "OK", "count": removed})


@blueprint.route("/queue/<queue_name>/compact", methods=["GET", "POST"])
def compact_queue(queue_name: str) -> Response:
    message = "not offered: chumon's workers dead-letter a listed job whose hash is gone"
    return answer({"status": "ERROR", "message": message}, 409)
