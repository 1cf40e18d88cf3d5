"""The units of work: payload models and thin handlers that call into the domain.

``registry`` holds every job type a chumon worker serves (``CHUMON_APP=jobs:registry``). Its
registry-wide dead-letter hook is the order flow's (``orders.dead_letter``): a job that dies
without a hook of its own (one whose type this worker does not know, during a rolling deploy)
still flags its order, if its payload names one.
"""

from jobs import demo, maintenance, orders
from workers import JobRegistry


def build_registry() -> JobRegistry:
    registry = JobRegistry(on_dead_letter=orders.HOOK)
    registry.include(demo.registry)
    registry.include(orders.registry)
    registry.include(maintenance.registry)
    return registry


registry = build_registry()
