"""``chumon dashboard``: rq-dashboard's pages for chumon's jobs, safe to put in front of an operator.

rq-dashboard 0.9 is two halves. Its front end (templates, underscore.js templates, jQuery,
Bootstrap) is what operators know; chumon serves it from rq-dashboard's own package. Its
Python half is not used: it reads jobs through rq's ``Job.fetch`` (ids with ``.`` or ``:``,
garbled fields and pickled ``meta`` gave HTTP 500s, and a pickle planted in ``meta`` was
unpickled), accepts state changes by GET and from any site, and runs on Flask's development
server. In its place:

- ``views``: the same URLs and JSON shapes, answered from ``reader``, which decodes every
  field at one boundary and never raises on bad data; actions only on dead letters, as
  ``chumon dlq requeue``/``purge`` do them;
- ``guard``: Host check (DNS rebinding), basic auth in constant time, POST-only actions
  with an origin check and a CSRF token, a Content-Security-Policy with a nonce;
- ``templates/``: the one place rq-dashboard's front end is changed (Flask looks there
  before the package's templates). ``base.html`` turns every ``<%= %>`` of every template
  into an escaping one, upstream templates included (why there: see that file), and hands
  jQuery the CSRF token; ``queues.html``, ``jobs.html`` and ``job.html`` mark dead letters
  and keep the action buttons on screen; ``scripts/jobs.js`` no longer writes the queue name
  raw into a script (Jinja now autoescapes the ``.js`` templates as well);
- ``serve``: refuses to start on settings that would fail open, and serves with waitress;
- ``orders``: the Orders section (the read model's orders list, one order's saga as a
  causation tree), read-only, behind the same guard; ``static/orders.js`` draws it with
  ``textContent`` only. ``templates/rq_dashboard/navbar.html`` adds its tab.
"""

from __future__ import annotations

from flask import Flask, Response
from redis import Redis
from redis.exceptions import RedisError

from chumon.dashboard import orders, views
from chumon.dashboard.guard import Guard
from chumon.dashboard.reader import Reader
from chumon.logs import mask
from workers.keys import Keys
from workers.settings import RuntimeSettings


def make_app(redis: Redis, settings: RuntimeSettings, guard: Guard) -> Flask:
    app = Flask(__name__, static_url_path="/chumon-static")  # templates/ and static/ beside this file
    app.extensions["chumon.dashboard"] = views.Context(
        Reader(redis, Keys(settings.key_prefix)), settings, guard.csrf_token
    )
    app.jinja_env.autoescape = True  # the .js templates too: Flask escapes only .html by default
    guard.install(app)
    app.url_map.redirect_defaults = False  # /0/view/queues answers itself, not a redirect to /
    app.register_blueprint(views.blueprint)
    app.register_blueprint(orders.blueprint)  # the Orders section: reads only, the same guard

    def redis_down(exc: Exception) -> Response:
        views.log.error("dashboard: Redis at %s: %s", settings.redis_url, exc)
        return Response(
            mask(f"Redis at {settings.redis_url} does not answer: {exc}\n"), 503, mimetype="text/plain"
        )

    app.register_error_handler(RedisError, redis_down)
    return app


__all__ = ["Guard", "make_app"]
