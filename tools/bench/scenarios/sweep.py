"""Delivery during a retention sweep (issue 13, item 3): ``--sweep-records``
finished records (their COMMAND_EXECUTED delivered) written with the master
stopped, all with one ``created``; the retention is then chosen so that they
expire ``EXPIRE_AFTER`` s after the writing ends, i.e. after the engine has
started and made its first (empty) sweep. The sweep that follows removes them
all while returns arrive at the latency runs' rate (half the bus ceiling by
default); latency as in ``engine_latency``, judged as added latency (p99 minus
the bus subscriber's p99 at the same rate).

The bench polls the store (``jids()``) to see the sweep: when the expired
records start to go, and how many went while the returns flowed
(``swept_during_window``); a window that saw no sweep is reported as such.
"""

import bisect
import time

from tools.bench import say
from tools.bench.context import (PROBE_WAIT, deliveries, engine_config, latency_rate, probe_engine, wipe_store,
                                 write_records)
from tools.bench.masters import CUTOFF_LINE, Master
from tools.bench.meter import CpuMeter, engine_rss_mb
from tools.bench.stats import ms_summary, stamp_to_ts

#: Seconds after the writing ends that the records expire: the master's start
#: and the engine's first sweep come before, the next sweep after.
EXPIRE_AFTER = 30.0
#: Longest the returns keep flowing, waiting for the sweep to end (seconds).
WINDOW_CAP = 90.0


def run_sweep(ctx):
    args = ctx.args
    n = args.sweep_records
    rate = latency_rate(ctx)
    master = ctx.master = Master("sweep", engine_config(ctx))
    wipe_store(master)
    master.write()
    ctx.open_pool(master)
    try:
        # The returns' records first, created an hour ahead so they outlive the sweep's.
        sweep_jobs = ctx.jobs("swp", n)
        interval_guess = 15.0
        seconds = min(WINDOW_CAP, interval_guess + args.sweep_seconds)
        lat_jobs = ctx.jobs("swl", int(rate * seconds))
        say(f"sweep: writing {len(lat_jobs)} records for the returns and {n} finished records (master stopped)")
        write_records(ctx, lat_jobs, time.time() + 3600, 600)
        # Their returns in the job cache too, as store_job leaves them: an engine
        # the bus cuts off at this rate catches up from there (as in the latency runs).
        ctx.pool.prep_jobcache(lat_jobs, with_return=True, timeout=120 + len(lat_jobs) / 50)
        created = time.time()
        write_records(ctx, sweep_jobs, created, 600, finished=True)
        written = time.time()
        say(f"  -> {n} finished records in {written - created:.1f} s")
        ctx.close_pool()
        retention = written + EXPIRE_AFTER - created
        expire_at = created + retention
        master.config["callbacks"] = dict(master.config["callbacks"], retention=round(retention, 1))
        master.start(need_engine=True)
        ctx.open_pool(master)
        if probe_engine(ctx) is None:
            raise RuntimeError(f"sweep: the engine never delivered a probe webhook within {PROBE_WAIT} s")
        res = _window(ctx, master, sweep_jobs, lat_jobs, rate, expire_at, retention)
        res.update({"expired": n, "write_s": round(written - created, 1)})
        ctx.results["scenarios"]["sweep"] = res
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _remaining(store, last_jid):
    """How many of the sweep's jobs (jids up to ``last_jid``) are still in the store."""
    return bisect.bisect_right(store.jids(), last_jid)


def _window(ctx, master, sweep_jobs, jobs, rate, expire_at, retention):
    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = salt.config.master_config(str(master.conf_path))
    store = factory.build_store(opts, factory.load_config(opts))
    last_jid = sweep_jobs[-1][0]
    wait = expire_at - 1.0 - time.time()
    if wait > 0:
        time.sleep(wait)
    before = _remaining(store, last_jid)
    if before < len(sweep_jobs):
        ctx.note(f"sweep: {len(sweep_jobs) - before} of the expired records went before the window (the master "
                 "took longer to start than the records had left)")
    n = len(jobs)
    say(f"sweep: {n} returns at {rate:.0f}/s ({n / rate:.0f} s) while {before} expired records go "
        f"(retention {retention:.0f} s, a sweep every {min(60.0, max(0.5, retention / 10)):.0f} s)")
    cut0 = master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    handle = ctx.pool.inject_start(jobs, "event", new=True, rate=rate)
    t_start = time.time()
    sweep_started = sweep_ended = None
    left = before
    rss_max = 0.0
    while time.time() - t_start < n / rate + 1:
        time.sleep(0.5)
        left = _remaining(store, last_jid)
        rss_max = max(rss_max, engine_rss_mb(ctx) or 0.0)
        if sweep_started is None and left < before:
            sweep_started = time.time()
        if sweep_started is not None and left == 0 and sweep_ended is None:
            sweep_ended = time.time()
    inj = ctx.pool.inject_finish(handle, timeout=120 + n / rate)
    _, still = ctx.receiver.wait_for_count("swl", "COMMAND_EXECUTED", n, timeout=90, stall=10)
    cpu = meter.stop()
    rows, dups = deliveries(ctx, "swl")
    lat = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None]
    in_sweep = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None and sweep_started
                and sweep_started <= r[0] <= (sweep_ended or time.time())]
    res = {"returns": n, "target_rate": rate, "offered_rate": inj["rate"], "delivered": len(rows),
           "lost": n - len(rows), "duplicates": dups, "latency": ms_summary(lat),
           "latency_while_sweeping": ms_summary(in_sweep), "retention_s": round(retention, 1),
           "swept_during_window": before - left, "left_after_window": left,
           "sweep_s": round(sweep_ended - sweep_started, 1) if sweep_started and sweep_ended else None,
           "sweep_started_after_s": round(sweep_started - t_start, 1) if sweep_started else None,
           "rss_max_mb": rss_max, "cutoffs": master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
    if still:
        ctx.note("sweep: the engine was still delivering when the 90 s wait ended")
    if not sweep_started:
        ctx.note("sweep: no sweep ran while the returns flowed; the figure is delivery without one")
    say(f"  -> swept {before - left}/{before} in the window ({res['sweep_s']} s), delivered {len(rows)}/{n}, latency "
        f"{res['latency']}, while sweeping {res['latency_while_sweeping']}; cpu {cpu}")
    return res
