"""The ceilings: what the machine allows without the engine.

ceiling/http: a bare aiohttp client posts the same signed bodies to the same
receiver. ceiling/bus: a master with no engine and no Reactor, and a
subscriber that only counts ret events while the injectors send the same
load (and, at the latency runs' rate, the bus's own latency).
"""

import time

from tools.bench import SPAWN, say
from tools.bench.clients import http_client_main, subscriber_main
from tools.bench.context import latency_rate, repeated
from tools.bench.masters import CUTOFF_LINE, Master
from tools.bench.meter import CpuMeter, wait_for_quiet_machine
from tools.bench.stats import ms_summary, stamp_to_ts, sustained_rate


def run_http_ceiling(ctx):
    ctx.results["scenarios"]["ceiling_http"] = repeated(
        ctx, "ceiling_http", lambda name, i: _http_ceiling_once(ctx, name), lambda r: r.get("rate"))


def _http_ceiling_once(ctx, name):
    args = ctx.args
    wait_for_quiet_machine(ctx, name)
    say(f"ceiling/http: bare aiohttp client, {args.http_requests} signed posts, concurrency {args.http_concurrency}")
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=http_client_main, daemon=True, name="bench-http-client",
                         args=(child, ctx.receiver.url(), ctx.secret, args.http_requests, args.http_concurrency))
    meter = CpuMeter(ctx)
    proc.start()
    ctx.extra_pids = {proc.pid: "http_client"}
    meter.start()
    try:
        if not parent.poll(120 + args.http_requests / 500):
            raise RuntimeError("the HTTP ceiling client did not finish")
        result = parent.recv()
        result["cpu"] = meter.stop()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
        ctx.extra_pids = {}
    say(f"  -> {result['rate']:.0f} posts/s, p50 {result['latency']['p50_ms']} ms, p99 "
        f"{result['latency']['p99_ms']} ms, failures {result['failures']}; cpu {result['cpu']}")
    return result


def run_bus_ceiling(ctx):
    args = ctx.args
    master = ctx.master = Master("plain", {})
    master.start()
    parent, child = SPAWN.Pipe()
    sub = SPAWN.Process(target=subscriber_main, args=(child, str(master.conf_path), ctx.bus_counter),
                        daemon=True, name="bench-subscriber")
    sub.start()
    ctx.extra_pids = {sub.pid: "subscriber"}
    try:
        ctx.open_pool(master)
        _wait_subscribed(ctx, parent)
        out = {}
        for mode, n in (("store_job", args.sj_returns), ("event", args.returns)):
            out[mode] = repeated(ctx, f"ceiling_bus_{mode}", lambda name, i, mode=mode, n=n: _bus_rate_once(
                ctx, parent, name, mode, n), lambda r: r.get("rate"))
        ctx.bus_event_ceiling = out["event"].get("rate")
        out["latency"] = repeated(ctx, "ceiling_bus_latency", lambda name, i: _bus_latency(ctx, parent, name),
                                  lambda r: r["latency"].get("p99_ms"), unit=" ms p99")
        out["cutoffs_logged"] = master.log_count(CUTOFF_LINE)
        lost = {m: out[m]["returns"] - out[m]["received"] for m in ("store_job", "event")}
        if out["cutoffs_logged"]:
            ctx.note(f"bus ceiling: the publisher cut off {out['cutoffs_logged']} slow subscriber(s) (the log does "
                     f"not say which; the master's own EventMonitor is one); the counting subscriber missed "
                     f"{lost} ret events (median runs)")
        ctx.results["scenarios"]["ceiling_bus"] = out
        parent.send("quit")
    finally:
        sub.join(5)
        if sub.is_alive():
            sub.terminate()
        ctx.extra_pids = {}
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _wait_subscribed(ctx, conn):
    """Until the subscriber has seen an event the injectors fired (bounded: 60 hellos)."""
    if not conn.poll(60) or conn.recv() != "subscribed":
        raise RuntimeError("bus subscriber did not start")
    for _ in range(60):
        ctx.pool.hello()
        if conn.poll(0.5):
            msg = conn.recv()
            if msg != "ready":
                raise RuntimeError(f"bus subscriber: {msg}")
            return
    raise RuntimeError("bus subscriber never saw the hello event")


def _bus_rate_once(ctx, conn, name, mode, n):
    args = ctx.args
    jobs = ctx.jobs("bus", n)
    if mode == "store_job":
        ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
    wait_for_quiet_machine(ctx, name)
    say(f"ceiling/bus ({mode}): {n} returns (<= {args.tput_seconds:.0f} s), window {args.window}, "
        f"{args.procs} injectors, no engine")
    meter = CpuMeter(ctx).start()
    inj = ctx.pool.inject(jobs, mode, new=True, window=args.window, counter="bus",
                          timeout=120 + n / 50, seconds=args.tput_seconds)
    rows = _subscriber_rows(conn, settle=2.0)
    cpu = meter.stop()
    res = {"returns": inj["n"], "received": len(rows), "rate": sustained_rate([t for t, _ in rows]),
           "injection_rate": inj["rate"], "cpu": cpu}
    say(f"  -> {len(rows)}/{inj['n']} ret events seen, {res['rate'] or 0:.0f}/s sustained "
        f"(injectors offered {inj['rate']:.0f}/s); cpu {cpu}")
    return res


def _bus_latency(ctx, conn, name):
    """Bus latency at the latency runs' rate: the floor for anything that reads the bus."""
    args = ctx.args
    rate = latency_rate(ctx)
    n = int(rate * args.latency_seconds)
    jobs = ctx.jobs("bus", n)
    wait_for_quiet_machine(ctx, name)
    say(f"ceiling/bus latency: {n} returns at {rate:.0f}/s to a subscriber that does nothing")
    meter = CpuMeter(ctx).start()
    inj = ctx.pool.inject(jobs, "event", new=True, rate=rate, timeout=120 + args.latency_seconds * 3)
    rows = _subscriber_rows(conn)
    lat = [t - ts for t, stamp in rows if (ts := stamp_to_ts(stamp)) is not None]
    res = {"target_rate": rate, "offered_rate": inj["rate"], "received": len(rows), "latency": ms_summary(lat),
           "cpu": meter.stop()}
    say(f"  -> offered {inj['rate']:.0f}/s, bus latency {res['latency']}")
    return res


def _subscriber_rows(conn, settle=0.5):
    time.sleep(settle)
    conn.send("times")
    if not conn.poll(30):
        raise RuntimeError("bus subscriber did not answer")
    return conn.recv()
