"""The dashboard's Orders section in headless Chromium, while an order runs.

An order is placed with markup in its customer's name and address, with no worker running:
the list and the order page show it PENDING. A worker is started; the order page, never
reloaded, follows the saga to CONFIRMED (the page is live). On every page: no dialog, no
injected element or script, the payloads shown as text. The job link of a command opens
that job's page. With ``CHUMON_SCREENSHOTS=DIR`` the pages are saved there as PNG (the
docs' screenshots are made so).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

import jobs
from tests.dashboard_support import CHROMIUM, Network, chromium, running_dashboard
from tests.e2e.test_dashboard_xss import EVALUATED, INSPECT, RECORD_DIALOGS
from tests.flow import QUEUES, running_flow
from tests.support import wait_until, worker_thread

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no {CHROMIUM}: .ci/install-test-tools installs Debian's"
    ),
]

NAME = "<img src=x data-xss onerror=alert('N')>{{7*823543}}<%=7*823543%>"
ADDRESS = "\"><svg data-xss onload=alert('A')></script><script>alert('S')</script> 1 Street"


def inspect(driver: Any, where: str, shows: str) -> None:
    seen: dict[str, Any] = driver.execute_script(INSPECT)
    assert seen["dialogs"] == [], f"a dialog was asked for on {where}: {seen['dialogs']}"
    assert seen["injected"] == 0, f"injected elements in the DOM on {where}"
    assert seen["scripts"] == 0, f"an injected script in the DOM on {where}"
    assert seen["urls"] == [], f"javascript: URLs on {where}"
    assert EVALUATED not in seen["text"], f"a template delimiter was evaluated on {where}"
    assert shows in seen["text"], f"{shows!r} not shown as text on {where}"


def text(driver: Any, selector: str) -> str:
    found: str = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector
    )
    return found


def screenshot(driver: Any, name: str) -> None:
    folder = os.environ.get("CHUMON_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.set_window_size(1280, 1000)
        driver.save_screenshot(str(Path(folder) / name))


def test_orders_pages_follow_a_running_order(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    with (
        running_flow(redis, redis_url, workers=0) as flow,
        running_dashboard(redis_url, tmp_path / "dashboard.log") as dash,
        chromium(tmp_path / "profile", tmp_path / "chromedriver.log") as driver,
    ):
        retried = flow.place(("TEA", 1), payment_token="tok_transient_1")
        refused = flow.place(("MUG", 1), ship_to="1 Nowhere Lane, Void")
        order_id = flow.place(("TEA", 2), customer_name=NAME, ship_to=ADDRESS, customer_email="x@example.com")
        wait_until(
            lambda: flow.producer.get_order_summary(order_id), message="the read model to show the order"
        )
        dash.wait_ready()
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_DIALOGS})
        network = Network(driver, dash.url)

        driver.get(dash.url + "/0/view/orders")
        row = f"table#orders tr[data-order='{order_id}']"
        network.wait_until(lambda: "PENDING" in text(driver, row), "the list to show the order PENDING")
        inspect(driver, "the orders list", shows="<img src=x data-xss")
        assert "x***@example.com" in text(driver, row)  # masked as the logs are

        driver.get(f"{dash.url}/0/view/orders/{order_id}")
        network.wait_until(lambda: "ReserveInventory" in text(driver, "#order-tree"), "the tree to show")
        assert "PENDING" in text(driver, "#order-state")
        with worker_thread(redis, jobs.registry, flow.settings, queues=QUEUES, concurrency=4):
            network.wait_until(
                lambda: "confirmed" in text(driver, "#order-outcome"),
                "the page, never reloaded, to follow the order to CONFIRMED",
            )
            flow.settled(order_id)
            flow.settled(retried)
            flow.settled(refused)
            network.wait_until(lambda: "EmailSent" in text(driver, "#order-tree"), "the email to show")
            network.wait_until(  # settled: the page stops asking the server for traces
                lambda: "final" in text(driver, "#order-outcome"),
                "the settled order's page to stop refreshing",
            )
        tree = text(driver, "#order-tree")
        for kind in (
            "OrderPlaced",
            "InventoryReserved",
            "ChargePayment",
            "PaymentCharged",
            "ArrangeShipping",
        ):
            assert kind in tree
        assert "up to date" in text(driver, "#order-lag")
        inspect(driver, "the order page", shows="<svg data-xss")

        driver.get(f"{dash.url}/0/view/orders/{refused}")
        network.wait_until(lambda: "cancelled" in text(driver, "#order-outcome"), "the refused order")
        compensations = driver.execute_script(
            "return Array.from(document.querySelectorAll('#order-tree .compensation > .line .type'))"
            ".map(e => e.textContent);"
        )
        assert compensations == ["RefundPayment", "PaymentRefunded", "ReleaseInventory", "InventoryReleased"]
        screenshot(driver, "dashboard-order.png")

        driver.get(f"{dash.url}/0/view/orders/{retried}")
        network.wait_until(lambda: "1 retry" in text(driver, "#order-tree"), "the charge's retry to show")
        assert "GatewayUnavailable" in text(driver, "#order-tree")
        job_url = driver.execute_script(
            "return Array.from(document.querySelectorAll('#order-tree .node-command .job a'))"
            ".map(a => a.getAttribute('href')).find(h => h.startsWith('/0/view/job/'));"
        )
        driver.get(dash.url + job_url)
        network.wait_until(lambda: text(driver, "#job-data") != "", "the job's page to show it")

        driver.get(dash.url + "/0/view/orders?status=confirmed")
        network.wait_until(lambda: "CONFIRMED" in text(driver, row), "the filtered list")
        assert refused not in text(driver, "table#orders")
        driver.get(dash.url + "/0/view/orders?customer=ada@example.com")
        network.wait_until(lambda: refused in text(driver, "table#orders"), "the customer's orders")
        assert order_id not in text(driver, "table#orders")
        screenshot(driver, "dashboard-orders.png")
        network.collect()

    assert network.failures == []
    assert [(url, status) for url, status in network.responses if status >= 400] == []
    assert network.console == [], network.console
    assert "Traceback" not in dash.output(), dash.output()
