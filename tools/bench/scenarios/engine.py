"""The engine on one master: throughput (closed loop, both injection modes),
latency (open loop at ``--rate``; again with a share aimed at a receiver
that never answers), and a burst that overflows the bus."""

import time

from tools.bench import say
from tools.bench.context import PROBE_WAIT, deliveries, engine_config, latency_rate, probe_engine, repeated, \
    write_records
from tools.bench.masters import CUTOFF_LINE, Master
from tools.bench.meter import CpuMeter, engine_rss_mb, wait_for_quiet_machine, wait_quiet
from tools.bench.profile import finish_profile, start_profile
from tools.bench.stats import ms_summary, stamp_to_ts, sustained_rate


def run_engine(ctx):
    args = ctx.args
    master = ctx.master = Master("engine", engine_config(ctx))
    master.start(need_engine=True)
    scenarios = ctx.results["scenarios"]
    try:
        ctx.open_pool(master)
        ready = probe_engine(ctx)
        if ready is None:
            raise RuntimeError(f"the engine never delivered a probe webhook within {PROBE_WAIT} s; see {master.log}")
        time.sleep(1)
        idle = engine_rss_mb(ctx)
        scenarios["engine_idle"] = {"rss_mb": idle, "first_probe_s": ready}
        say(f"engine up; idle RSS {idle:.1f} MB")
        for mode, n in (("store_job", args.sj_returns), ("event", args.returns)):
            key = f"engine_tput_{mode}"
            scenarios[key] = repeated(ctx, key, lambda name, i, mode=mode, n=n: _throughput_once(
                ctx, name, i, mode, n), lambda r: r.get("rate"))
        for key, share in (("engine_latency", 0.0), ("engine_latency_hole", args.hole_share)):
            scenarios[key] = repeated(ctx, key, lambda name, i, share=share: _latency_once(
                ctx, name, i, share), lambda r: r["latency"].get("p99_ms"), unit=" ms p99")
        # Last: a burst that overflows the bus leaves the engine catching up for a while.
        run_burst(ctx)
        scenarios["engine_phase"] = {"cutoffs_logged": master.log_count(CUTOFF_LINE)}
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _throughput_once(ctx, name, i, mode, n):
    args = ctx.args
    prefix = f"{'tp' if mode == 'event' else 'sj'}{i}"
    jobs = ctx.jobs(prefix, n)
    write_records(ctx, jobs, time.time(), 600)
    if mode == "store_job":
        ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
    wait_quiet(ctx, 30)  # the previous scenario's backlog first
    wait_for_quiet_machine(ctx, name)
    say(f"engine/throughput ({mode}): up to {n} returns or {args.tput_seconds:.0f} s, closed loop "
        f"(window {args.window}), {args.procs} injectors")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    if mode == "event" and i == 0:
        start_profile(ctx, 10, "tput_event")
    inj = ctx.pool.inject(jobs, mode, new=True, window=args.window, counter="receiver", timeout=120 + n / 50,
                          seconds=args.tput_seconds)
    n = inj["n"]
    ctx.receiver.wait_for_count(prefix, "COMMAND_EXECUTED", n, timeout=60, stall=10)
    # The engine's work is not over when the receiver has every webhook: the
    # writes and the "delivered" announcements may still be queued. CPU per
    # webhook counts all of it: the span ends once the engine is quiet.
    tail_started = time.time()
    wait_quiet(ctx, 60)
    tail_s = time.time() - tail_started
    cpu = meter.stop()
    finish_profile(ctx)
    rows, dups = deliveries(ctx, prefix)
    times = [r[0] for r in rows]
    res = {"mode": mode, "returns": n, "delivered": len(rows), "duplicates": dups,
           "rate": sustained_rate(times), "injection_rate": inj["rate"],
           "overall_rate": len(rows) / max(1e-9, (max(times) - inj["first"])) if times else None,
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu, "rss_mb": engine_rss_mb(ctx)}
    # The figure: engine process CPU time over webhooks delivered (every thread of it).
    res["engine_cpu_s"] = round(meter.seconds.get("engine", 0.0), 3)
    res["engine_busy_after_last_webhook_s"] = round(tail_s, 1)
    res["engine_cpu_us_per_webhook"] = round(res["engine_cpu_s"] / len(rows) * 1e6, 1) if rows else None
    say(f"  -> delivered {len(rows)}/{n}, {res['rate'] or 0:.0f}/s sustained (injectors offered "
        f"{inj['rate']:.0f}/s), bus cut-offs {res['cutoffs']}; engine CPU "
        f"{res['engine_cpu_us_per_webhook'] or 0:.0f} µs per webhook; cpu {cpu}")
    return res


def _interleave(jobs, hole_jobs, share):
    """Every (1/share)-th job goes to the black hole."""
    merged, step, hi = [], max(1, round(1 / share)), 0
    for i, job in enumerate(jobs):
        merged.append(job)
        if i % step == step - 1 and hi < len(hole_jobs):
            merged.append(hole_jobs[hi])
            hi += 1
    return merged + hole_jobs[hi:]


def _latency_once(ctx, name, i, hole_share):
    args = ctx.args
    target = latency_rate(ctx)
    n = int(target * args.latency_seconds)
    prefix, hole_prefix = (f"lat{i}", None) if not hole_share else (f"bh{i}", f"hole{i}")
    jobs = ctx.jobs(prefix, n)
    hole_jobs = ctx.jobs(hole_prefix, int(n * hole_share)) if hole_share else []
    jobs_all = _interleave(jobs, hole_jobs, hole_share) if hole_share else jobs
    write_records(ctx, jobs_all, time.time(), 600, {hole_prefix: ctx.receiver.hole_url} if hole_share else None)
    # The returns are in the master job cache, as store_job leaves them, so an
    # engine that the bus drops can catch up from there.
    ctx.pool.prep_jobcache(jobs_all, with_return=True, timeout=120 + len(jobs_all) / 50)
    wait_quiet(ctx, 30)  # the previous scenario's backlog first
    wait_for_quiet_machine(ctx, name)
    what = f", {len(hole_jobs)} to a receiver that never answers" if hole_jobs else ""
    say(f"engine/latency{'+hole' if hole_jobs else ''}: {len(jobs_all)} returns at {target:.0f}/s "
        f"for {args.latency_seconds:.0f} s (event injection){what}")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    holes0 = ctx.receiver.stats()["hole_connections"]
    meter = CpuMeter(ctx).start()
    rate = target * len(jobs_all) / max(1, n)
    inj = ctx.pool.inject(jobs_all, "event", new=True, rate=rate, timeout=120 + args.latency_seconds * 3)
    _, still = ctx.receiver.wait_for_count(prefix, "COMMAND_EXECUTED", n, timeout=90, stall=10)
    cpu = meter.stop()
    if still:
        ctx.note(f"{name}: the engine was still delivering when the 90 s wait ended")
    rows, dups = deliveries(ctx, prefix)
    lat = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None]
    res = {"returns": n, "offered_rate": inj["rate"], "target_rate": target, "delivered": len(rows),
           "lost": n - len(rows), "duplicates": dups, "latency": ms_summary(lat),
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
    if hole_jobs:
        res["hole_returns"] = len(hole_jobs)
        res["hole_connections"] = ctx.receiver.stats()["hole_connections"] - holes0
    say(f"  -> offered {inj['rate']:.0f}/s, delivered {len(rows)}/{n}, latency {res['latency']}; cpu {cpu}")
    return res


def run_burst(ctx):
    args = ctx.args
    n = args.burst
    jobs = ctx.jobs("burst", n)
    write_records(ctx, jobs, time.time(), 600)
    say(f"engine/burst: {n} returns; job cache written first, jobs announced at <= {args.announce_rate}/s")
    ctx.pool.prep_jobcache(jobs, with_return=True, timeout=120 + n / 50)
    ctx.pool.inject(jobs, "event", new=True, ret=False, rate=args.announce_rate, timeout=120 + n / 100)
    wait_quiet(ctx, 30)
    wait_for_quiet_machine(ctx, "engine_burst")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    inj = ctx.pool.inject(jobs, "event", new=False, timeout=120 + n / 100)
    if "burst" in args.profile:
        time.sleep(3)  # profile the recovery, not the burst itself
        start_profile(ctx, 20, "burst_recovery")
    # Long stall window: after a cut-off the engine may be silent while it catches up.
    _, still = ctx.receiver.wait_for_count("burst", "COMMAND_EXECUTED", n, timeout=args.burst_wait, stall=60)
    cpu = meter.stop()
    finish_profile(ctx)
    rows, dups = deliveries(ctx, "burst")
    res = {"returns": n, "offered_rate": inj["rate"], "delivered": len(rows), "lost": n - len(rows),
           "still_delivering_at_cap": still, "duplicates": dups,
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu,
           "drain_rate": sustained_rate([r[0] for r in rows])}
    alive = probe_engine(ctx, timeout=10)
    res["probe_after_s"] = alive
    res["engine_hears_bus_after"] = alive is not None
    ctx.results["scenarios"]["engine_burst"] = res
    say(f"  -> fired at {inj['rate']:.0f}/s, delivered {len(rows)}/{n} (lost {res['lost']}), bus cut-offs "
        f"{res['cutoffs']}{' (still delivering at the cap)' if still else ''}, a probe delivered afterwards "
        f"within 10 s: {res['engine_hears_bus_after']}; cpu {cpu}")
    return res
