"""The baseline: what Salt does without the engine. A master whose Reactor
calls the ``http.query`` runner on every ``salt/job/*/ret/*``, under the
same store_job load (smaller: it manages tens of webhooks/s) and the same
burst."""

import time

from tools.bench import BENCH, say
from tools.bench.context import PROBE_WAIT, deliveries, repeated
from tools.bench.masters import CUTOFF_LINE, Master
from tools.bench.meter import CpuMeter, wait_for_quiet_machine
from tools.bench.stats import ms_summary, stamp_to_ts, sustained_rate


def reactor_config(ctx):
    hook = BENCH / "reactor" / "reactor" / "hook.sls"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        "bench_webhook:\n"
        "  runner.http.query:\n"
        "    - args:\n"
        f"      - url: {ctx.receiver.url()}\n"
        "      - method: POST\n"
        "      - header_dict: {Content-Type: application/json}\n"
        "      - data: {{ data|json|yaml_dquote }}\n",
        encoding="utf-8")
    return {"reactor": [{"salt/job/*/ret/*": [str(hook)]}]}


def run_baseline(ctx):
    master = ctx.master = Master("reactor", reactor_config(ctx))
    master.start(need_reactor=True)
    try:
        ctx.open_pool(master)
        _wait_for_a_reaction(ctx, master)
        ctx.results["scenarios"]["baseline_tput"] = repeated(
            ctx, "baseline_tput", lambda name, i: _throughput_once(ctx, name, i), lambda r: r.get("rate"))
        _burst(ctx)
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _wait_for_a_reaction(ctx, master):
    started = time.time()
    while time.time() - started < PROBE_WAIT:
        ctx.pool.inject(ctx.jobs("rprobe", 1), "event", new=False, timeout=30, lead=0)
        got, _ = ctx.receiver.wait_for_count("rprobe", "REACTOR", 1, timeout=3)
        if got:
            return
    raise RuntimeError(f"the Reactor never posted within {PROBE_WAIT} s; see {master.log}")


def _throughput_once(ctx, name, i):
    args = ctx.args
    n = args.baseline_returns
    prefix = f"base{i}"
    jobs = ctx.jobs(prefix, n)
    ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
    wait_for_quiet_machine(ctx, name)
    say(f"baseline/throughput: {n} returns via store_job into the Reactor + http.query "
        f"(wait <= {args.baseline_wait:.0f} s)")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    inj = ctx.pool.inject(jobs, "store_job", new=True, timeout=120 + n / 50)
    _, still = ctx.receiver.wait_for_count(prefix, "REACTOR", n, timeout=args.baseline_wait, stall=15)
    cpu = meter.stop()
    rows, dups = deliveries(ctx, prefix, state="REACTOR")
    lat = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None]
    res = {"returns": n, "delivered": len(rows), "still_delivering_at_cap": still, "duplicates": dups,
           "rate": sustained_rate([r[0] for r in rows]), "injection_rate": inj["rate"], "latency": ms_summary(lat),
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
    say(f"  -> delivered {len(rows)}/{n}, {res['rate'] or 0:.1f}/s; cpu {cpu}")
    return res


def _burst(ctx):
    args = ctx.args
    n = args.burst
    jobs = ctx.jobs("rburst", n)
    wait_for_quiet_machine(ctx, "baseline_burst")
    say(f"baseline/burst: {n} returns fired as fast as the injectors can (event injection)")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    inj = ctx.pool.inject(jobs, "event", new=False, timeout=120 + n / 100)
    _, still = ctx.receiver.wait_for_count("rburst", "REACTOR", n, timeout=args.baseline_burst_wait, stall=15)
    cpu = meter.stop()
    rows, _ = deliveries(ctx, "rburst", state="REACTOR")
    res = {"returns": n, "offered_rate": inj["rate"], "delivered": len(rows), "lost": n - len(rows),
           "still_delivering_at_cap": still, "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
    ctx.results["scenarios"]["baseline_burst"] = res
    say(f"  -> fired at {inj['rate']:.0f}/s, delivered {len(rows)}/{n}, bus cut-offs {res['cutoffs']}"
        f"{' (still delivering at the cap)' if still else ''}; cpu {cpu}")
