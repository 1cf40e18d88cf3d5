"""The benchmark harness: chumon's worker side by side with rq's SimpleWorker and bullmq.

``python -m bench`` runs every workload, interleaved over several rounds, in one invocation,
on a private redis-server; ``--quick`` and ``--smoke`` are smaller. The method and the numbers
are in docs/performance.md. Nothing here is imported by the runtime.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench"
T0_KEY = "bench:t0"
COUNTER_KEY = "bench:counter"
SEEN_PREFIX = "bench:seen:"
