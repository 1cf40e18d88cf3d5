"""The units of work: payload models and thin handlers that call into the domain.

``registry`` holds every job type a chumon worker serves (``CHUMON_APP=jobs:registry``).
"""

from jobs import demo, maintenance, orders
from workers import JobRegistry


def build_registry() -> JobRegistry:
    registry = JobRegistry()
    registry.include(demo.registry)
    registry.include(orders.registry)
    registry.include(maintenance.registry)
    return registry


registry = build_registry()
