/* The Orders pages of chumon's dashboard (chumon/dashboard/orders.py).
   Everything from Redis is put on the page with textContent, never as markup; the only
   URLs used are the ones the server built (data-url, each row's and job's url). */
(function () {
    "use strict";
    var root = document.getElementById("chumon-orders");
    if (!root) { return; }
    var POLL_MS = 2500;

    function el(tag, className, text) {
        var node = document.createElement(tag);
        if (className) { node.className = className; }
        if (text !== undefined && text !== null) { node.textContent = String(text); }
        return node;
    }
    function link(url, text) {
        var a = el("a", null, text);
        if (typeof url === "string" && url.charAt(0) === "/") { a.setAttribute("href", url); }
        return a;
    }
    function when(ts) {
        if (!ts) { return "--:--:--"; }
        return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 23) + "Z";
    }
    function autorefresh() {
        var toggle = document.getElementById("autorefresh-switch");
        return !toggle || toggle.checked;
    }
    // Loads url now and every POLL_MS while auto-refresh is on; stops once draw says the page
    // is final (an order that ended, read model caught up, no job left to run): a trace costs
    // the server a pass over the jobs Redis keeps, not worth repeating for a settled order.
    function poll(url, draw, fail) {
        var timer = null;
        var load = function () {
            fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
                .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
                .then(function (answer) {
                    if (!answer.ok) { fail(answer.body); return; }
                    if (draw(answer.body) === "final" && timer !== null) { clearInterval(timer); timer = null; }
                })
                .catch(function (error) { fail({message: String(error)}); });
        };
        load();
        timer = setInterval(function () { if (autorefresh()) { load(); } }, POLL_MS);
    }
    var WAITING = {queued: true, scheduled: true, started: true, deferred: true};
    function jobsWaiting(node) {
        if (node.job && WAITING[node.job.status]) { return true; }
        return node.children.some(jobsWaiting);
    }

    // -- the list ------------------------------------------------------------------------------
    function drawList(data) {
        var body = document.querySelector("#orders tbody");
        var rows = document.createDocumentFragment();
        data.orders.forEach(function (order) {
            var tr = el("tr", order.attention ? "attention" : null);
            tr.setAttribute("data-order", order.order_id);
            var first = el("td", "order-id");
            first.appendChild(link(order.url, order.order_id));
            tr.appendChild(first);
            tr.appendChild(el("td", "status status-" + order.status.toLowerCase(),
                order.status + (order.attention ? " (needs attention)" : "")));
            tr.appendChild(el("td", "customer", order.customer));
            tr.appendChild(el("td", "narrow", order.items));
            tr.appendChild(el("td", "narrow", order.total));
            tr.appendChild(el("td", "why", order.attention || order.reason || ""));
            tr.appendChild(el("td", "narrow", when(order.placed_at)));
            rows.appendChild(tr);
        });
        if (!data.orders.length) {
            var empty = el("tr");
            var cell = el("td", null, "no orders (with these filters)");
            cell.setAttribute("colspan", "7");
            empty.appendChild(cell);
            rows.appendChild(empty);
        }
        body.replaceChildren(rows);
    }

    // -- one order ---------------------------------------------------------------------------------
    function jobText(job) {
        var text = "job on " + job.queue + ": " + job.status + ", attempt " + job.attempt +
            (job.max_attempts ? "/" + job.max_attempts : "");
        if (job.retries) { text += ", " + job.retries + (job.retries === 1 ? " retry" : " retries"); }
        if (job.status === "scheduled" && job.next_run_at) { text += ", next try " + job.next_run_at; }
        if (job.dead_lettered_at) { text += ", DEAD-LETTERED " + job.dead_lettered_at; }
        return text;
    }
    function drawNode(node) {
        var li = el("li", "node node-" + node.kind + (node.compensation ? " compensation" : ""));
        var line = el("div", "line");
        line.appendChild(el("span", "at", when(node.at)));
        line.appendChild(el("span", "kind", node.kind));
        if (node.seq !== null && node.seq !== undefined) { line.appendChild(el("span", "seq", "#" + node.seq)); }
        line.appendChild(el("span", "type", node.type));
        if (node.compensation) { line.appendChild(el("span", "badge badge-warning", "compensation")); }
        if (node.job) {
            var job = el("span", "job");
            job.appendChild(link(node.job.url, node.job.job_id));
            job.appendChild(document.createTextNode(" " + jobText(node.job)));
            line.appendChild(job);
        }
        if (node.detail) { line.appendChild(el("span", "detail", node.detail)); }
        if (node.cause_missing) { line.appendChild(el("span", "missing", "cause " + node.causation_id + " no longer kept")); }
        li.appendChild(line);
        if (node.job) {
            node.job.failures.forEach(function (failure) { li.appendChild(el("div", "failure", "! " + failure)); });
            if (node.job.dead_letter_reason) {
                li.appendChild(el("div", "failure", "! dead letter: " + node.job.dead_letter_reason));
            }
        }
        if (node.children.length) {
            var list = el("ul");
            node.children.forEach(function (child) { list.appendChild(drawNode(child)); });
            li.appendChild(list);
        }
        return li;
    }
    function drawOrder(data) {
        document.getElementById("order-state").textContent =
            data.status + (data.reason ? " (" + data.reason + ")" : "") + " · " + data.events + " events, " +
            data.commands + " commands";
        var attention = document.getElementById("order-attention");
        attention.hidden = !data.attention;
        attention.textContent = data.attention ? "NEEDS ATTENTION: " + data.attention : "";
        document.getElementById("order-lag").textContent = "read model: version " +
            (data.read_model_version === null ? "-" : data.read_model_version) + " of " + data.version +
            (data.read_model_lag ? " (" + data.read_model_lag + " event(s) behind)" : " (up to date)");
        var tree = el("ul", "tree");
        tree.appendChild(drawNode(data.root));
        document.getElementById("order-tree").replaceChildren(tree);
        var outcome = {CONFIRMED: "confirmed", CANCELLED: "cancelled: " + data.reason, PENDING: "still running"};
        var final = data.status !== "PENDING" && !data.attention && !data.read_model_lag && !jobsWaiting(data.root);
        document.getElementById("order-outcome").textContent = "Outcome: " + (outcome[data.status] || data.status) +
            (final ? " (final: no longer refreshed; reload the page to look again)" : "");
        return final ? "final" : "";
    }

    function failed(target) {
        return function (body) {
            var node = document.querySelector(target);
            if (node) { node.textContent = "could not load: " + (body && body.message ? body.message : "error"); }
        };
    }

    var url = root.getAttribute("data-url");
    if (root.getAttribute("data-page") === "list") {
        poll(url + window.location.search, drawList, failed("#orders tbody"));
    } else {
        poll(url, drawOrder, failed("#order-state"));
    }
}());
