"""The benchmark's table: ratios against rq, targets, and whether chumon leads every peer."""

from bench.report import rows, table
from bench.results import Results


def results() -> Results:
    r = Results()
    for system, rate in (("rq", 2000.0), ("chumon", 4000.0), ("bullmq", 3500.0), ("dramatiq", 4100.0)):
        r.add("enqueue_single", system, rate)
    for system, ms in (("rq SimpleWorker", 5.0), ("chumon c=8 (default)", 2.5), ("bullmq c=1", 3.0)):
        r.add("latency_single_p50", system, ms)
    r.missing[("enqueue_bulk", "dramatiq")] = "no bulk path"
    r.add("enqueue_bulk", "chumon", 20000.0)
    return r


def test_chumon_rows_say_which_peer_is_ahead_higher_and_lower_being_better() -> None:
    by = {(row.metric, row.system): row for row in rows(results())}
    assert by[("enqueue_single", "chumon")].behind == "dramatiq"
    assert by[("latency_single_p50", "chumon c=8 (default)")].behind == ""  # lower is better: it leads
    assert by[("enqueue_single", "dramatiq")].behind is None  # only chumon's rows are judged
    assert by[("enqueue_single", "chumon")].vs_rq == 2.0


def test_a_row_a_system_cannot_measure_says_why() -> None:
    shown = table(results())
    assert "BEHIND dramatiq" in shown and "leads" in shown
    assert "n/a (1)" in shown and "(1) dramatiq, enqueue in bulk: no bulk path" in shown
