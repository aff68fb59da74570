"""What the engine's metrics cost: the per-attempt hook and one scrape with many records held.

    .venv/bin/python tools/metrics_overhead.py

Figures only (no pass/fail): the hook runs on the engine's loop once per
attempt; a scrape runs on the metrics server's thread.
"""

import time
import timeit

from prometheus_client import generate_latest

from salt_callbacks.metrics.null import NULL_METRICS
from salt_callbacks.metrics.registry import EngineMetrics
from salt_callbacks.model.records import AttemptResult, Delivery, Record
from salt_callbacks.model.retry import Outcome

CALLS = 200_000
HELD = 100_000


def record(n, created):
    return Record(jid=f"{20240101000000000000 + n}", device_id="dev", url="http://127.0.0.1/", created=created,
                  timeout=60, command={}, signer="default", user="u")


def main():
    metrics = EngineMetrics("m", "0")
    rec = record(0, time.time() - 5)
    delivery = Delivery(state="COMMAND_EXECUTED", delivery_id="msg_x", body="{}", created=time.time() - 1,
                        attempts=1)
    ok, failed = AttemptResult(status=200), AttemptResult(status=500)
    for name, hooks, result, outcome in (("delivered", metrics, ok, Outcome.DELIVERED),
                                         ("retry", metrics, failed, Outcome.RETRY),
                                         ("metrics off", NULL_METRICS, ok, Outcome.DELIVERED)):
        spent = timeit.timeit(lambda h=hooks, r=result, o=outcome: h.attempt_done(rec, delivery, 0.0, r, o, False),
                              number=CALLS)
        print(f"attempt hook, {name}: {spent / CALLS * 1e6:.2f} µs per attempt")
    metrics.watch({(r.jid, r.device_id): r for r in (record(n, 0.0) for n in range(HELD))})
    spent = timeit.timeit(lambda: generate_latest(metrics.registry), number=20)
    print(f"one scrape with {HELD} records held: {spent / 20 * 1e3:.1f} ms (on the metrics thread)")


if __name__ == "__main__":
    main()
