"""Many pending callbacks: ``--pending`` records written with the master
stopped and resumed by a restart (resume time, RSS), then ``--due-rate`` x
``--due-seconds`` more falling due (TIMEOUT lateness), then the runner's
reads (the runner functions, in process) with all of them in the store."""

import json
import random
import statistics
import threading
import time
import traceback

from tools.bench import say
from tools.bench.context import PROBE_WAIT, deliveries, engine_config, probe_engine, wipe_store, write_records
from tools.bench.masters import Master
from tools.bench.meter import CpuMeter, engine_rss_mb, wait_for_quiet_machine, wait_quiet
from tools.bench.profile import finish_profile, start_profile
from tools.bench.stats import ms_summary


def run_pending(ctx):
    args = ctx.args
    master = ctx.master = Master("engine", engine_config(ctx))
    due_n = int(min(args.due_rate * args.due_seconds, args.pending // 2))
    long_n = args.pending - due_n
    wipe_store(master)
    master.write()  # the injectors read this config: the store must be this master's
    ctx.open_pool(master)
    try:
        write_rate = _write_long_pending(ctx, long_n)
        ctx.close_pool()
        resumed, resume_s, resume_how, rss_loaded = _restart_and_resume(ctx, master)
        res = _due_window(ctx, due_n, write_rate)
        idle = ctx.results["scenarios"].get("engine_idle", {}).get("rss_mb")
        res.update({"pending": args.pending, "long_pending": long_n, "write_rate": write_rate, "resumed": resumed,
                    "resume_s": resume_s, "resume_measured_by": resume_how, "rss_idle_mb": idle,
                    "rss_loaded_mb": rss_loaded})
        if idle and res["rss_pending_mb"]:
            res["bytes_per_callback"] = (res["rss_pending_mb"] - idle) * 2**20 / args.pending
            res["mb_per_100k"] = (res["rss_pending_mb"] - idle) * 100000 / args.pending
        ctx.results["scenarios"]["pending"] = res
        run_store_scale(ctx, res.pop("_due_jobs"))
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _write_long_pending(ctx, long_n):
    jobs = ctx.jobs("pend", long_n)
    say(f"pending: writing {long_n} records (deadline +600 s) into the store, master stopped")
    started = time.time()
    write_rate = write_records(ctx, jobs, time.time(), 600)
    say(f"  -> {long_n} records in {time.time() - started:.1f} s ({write_rate:.0f} records/s "
        f"from {ctx.args.procs} procs)")
    return write_rate


def _restart_and_resume(ctx, master):
    """Start the master over the records; how long the engine took to resume them, and its RSS then."""
    # Watch for the engine's start event (it carries the resumed count):
    # the watcher connects as soon as the bus socket exists.
    watch = {}
    master.clear_sockets()
    watcher = threading.Thread(target=_watch_start, args=(master, watch, 600), daemon=True)
    watcher.start()
    master.start(need_engine=True)
    ctx.open_pool(master)
    ready = probe_engine(ctx, timeout=max(PROBE_WAIT, ctx.args.pending / 500))
    watcher.join(5)
    if ready is None:
        raise RuntimeError("engine not delivering after the restart with pending records")
    proc = master.engine_proc()
    if "t" in watch:
        resume_s, resume_how = watch["t"] - proc.create_time(), "engine start event"
    else:  # missed the event (a quick load): the first probe delivered is an upper bound
        resume_s, resume_how = time.time() - proc.create_time(), "first probe delivered (upper bound)"
    resumed = (watch.get("data") or {}).get("resumed")
    time.sleep(1)
    rss_loaded = engine_rss_mb(ctx)
    say(f"  -> engine resumed {resumed} records in {resume_s if resume_s is None else round(resume_s, 1)} s "
        f"(process start to salt/callbacks/engine/start); RSS {rss_loaded:.1f} MB")
    return resumed, resume_s, resume_how, rss_loaded


def _due_window(ctx, due_n, write_rate):
    """Records that fall due at --due-rate/s, announced like a real publish; TIMEOUT lateness."""
    args = ctx.args
    wait_for_quiet_machine(ctx, "pending")
    jobs = ctx.jobs("due", due_n)
    est = due_n / max(100.0, write_rate * 0.6) + due_n / args.announce_rate + 4
    t0 = time.time() + est
    deadlines = [t0 + i / args.due_rate for i in range(due_n)]
    timeout = 5
    say(f"pending: {due_n} more records due at {args.due_rate:.0f}/s from T0 = now + {est:.1f} s")
    write_records(ctx, jobs, [d - timeout for d in deadlines], timeout)
    ctx.pool.inject(jobs, "event", new=True, ret=False, rate=args.announce_rate, timeout=120 + due_n / 100)
    wait_quiet(ctx, max(0.5, t0 - time.time() - 0.5))
    rss_full = engine_rss_mb(ctx)
    slack = t0 - time.time()
    if slack < 0:
        ctx.note(f"pending: setup overran T0 by {-slack:.1f} s; early TIMEOUTs fired before the window")
    say(f"  -> {args.pending} pending, engine RSS {rss_full:.1f} MB; window starts in {slack:.1f} s")
    meter = CpuMeter(ctx).start()
    if slack > 0:
        time.sleep(slack)
    start_profile(ctx, max(3, min(10, args.due_seconds)), "pending_timeouts")  # --profile pending
    end = t0 + due_n / args.due_rate
    rss_max = rss_full
    while time.time() < end + 1:
        time.sleep(0.5)
        rss_max = max(rss_max, engine_rss_mb(ctx) or 0)
    # Long stall window: the engine can hold its loop for many seconds in one tick.
    _, still = ctx.receiver.wait_for_count("due", "TIMEOUT", due_n, timeout=max(30, due_n / 100), stall=30)
    if still:
        ctx.note("pending: TIMEOUTs were still arriving when the wait ended")
    cpu = meter.stop()
    finish_profile(ctx)
    by_key = {(jid, dev): d for (jid, dev), d in zip(jobs, deadlines)}
    rows, dups = deliveries(ctx, "due", state="TIMEOUT")
    late = [r[0] - by_key[(r[1], r[2])] for r in rows if (r[1], r[2]) in by_key]
    # Lateness along the window (deadline order): constant = a fixed delay, growing = falling behind.
    ordered = sorted((by_key[(r[1], r[2])], r[0] - by_key[(r[1], r[2])]) for r in rows if (r[1], r[2]) in by_key)
    tenth = max(1, len(ordered) // 10)
    along = [round(statistics.median(x for _, x in ordered[i:i + tenth]) * 1000, 1)
             for i in range(0, len(ordered), tenth)][:10]
    say(f"  -> TIMEOUTs {len(rows)}/{due_n}, lateness {ms_summary(late)}; median lateness along the "
        f"window (ms): {along}; cpu {cpu}")
    return {"due": due_n, "due_rate": args.due_rate, "timeouts_received": len(rows), "missing": due_n - len(rows),
            "duplicates": dups, "early": sum(1 for x in late if x < 0), "lateness": ms_summary(late),
            "lateness_p50_by_tenth_of_window_ms": along,
            "first_timeout_after_t0_s": (min(r[0] for r in rows) - t0) if rows else None,
            "rss_pending_mb": rss_full, "rss_max_mb": rss_max, "cpu": cpu, "_due_jobs": jobs}


def _watch_start(master, out, timeout):
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    deadline = time.time() + 120
    while not (master.sock_dir / "master_event_pub.ipc").exists():
        if time.time() > deadline:
            return
        time.sleep(0.01)
    opts = salt.config.master_config(str(master.conf_path))
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as ev:
            deadline = time.time() + timeout
            while time.time() < deadline:
                event = ev.get_event(wait=1, tag="salt/callbacks/engine/start", full=True)
                if event:
                    out["t"], out["data"] = time.time(), event.get("data")
                    return
    except Exception:  # noqa: BLE001 - the probe is the fallback
        out["error"] = traceback.format_exc()


def _timed(func, repeat, cap):
    """Median and max seconds of ``func()`` over ``repeat`` calls, stopping at ``cap`` s total."""
    times, started = [], time.time()
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t)
        if time.time() - started > cap:
            break
    return {"median_ms": round(statistics.median(times) * 1000, 2), "max_ms": round(max(times) * 1000, 2),
            "calls": len(times)}, result


def run_store_scale(ctx, due_jobs):
    """callbacks.get / callbacks.list with the pending records present, measured
    in process as issue 13 asks: the runner module loaded through
    ``salt.loader.runner`` in this process, with the master's config and the opts
    ``salt-run`` gives it (``fun`` set: a system caller, this user, unrestricted),
    each function called directly, so salt-run's start-up and RunnerClient's
    job machinery (~13 ms a call) are not in the figure. A call that finds
    nothing (an error, an empty list where records exist) is reported with it:
    a caller who may see nothing would measure an empty walk, not the read."""
    import getpass  # pylint: disable=import-outside-toplevel

    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.loader  # pylint: disable=import-outside-toplevel

    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel

    args = ctx.args
    opts = salt.config.master_config(str(ctx.master.conf_path))
    runner_opts = dict(opts, fun="callbacks.list", arg=[])  # as salt-run's own process has them
    runners = salt.loader.runner(runner_opts)
    user = getpass.getuser()  # salt-run passes the system user who ran it, as RunnerClient.low sets it:
    for fun in ("callbacks.get", "callbacks.list"):
        runners[fun].__globals__["__user__"] = user

    def call(fun, *a, **kw):
        return runners[fun](*a, **kw)

    total = args.pending
    say(f"store: callbacks.get / callbacks.list in process (the runner functions) with {total}+ records present")
    sample = random.Random(1).sample(due_jobs, min(20, len(due_jobs)))
    out = {"records": total, "measured_by": "runner functions in process (salt.loader.runner)"}
    gets = []
    for jid, dev in sample:
        t = time.perf_counter()
        rec = call("callbacks.get", dev, jid)
        gets.append(time.perf_counter() - t)
        if not isinstance(rec, dict) or rec.get("jid") != jid:
            out.setdefault("get_errors", []).append(str(rec)[:200])
    out["get"] = {"median_ms": round(statistics.median(gets) * 1000, 2), "max_ms": round(max(gets) * 1000, 2),
                  "calls": len(gets)}
    if out.get("get_errors"):
        ctx.note(f"store: {len(out['get_errors'])} of {len(gets)} callbacks.get calls found no record")
    cases = [("list", {}, True), ("list_device", {"device_id": due_jobs[0][1]}, True),
             ("list_timeout_10", {"state": "TIMEOUT", "limit": 10}, True),
             ("list_executed_10_nomatch", {"state": "COMMAND_EXECUTED", "limit": 10}, False)]
    for name, kw, finds in cases:
        res, value = _timed(lambda kw=kw: call("callbacks.list", **kw), 5, args.store_cap)
        res["returned"] = len(value) if isinstance(value, list) else str(value)[:200]
        if not isinstance(value, list) or (finds and not value):
            ctx.note(f"store: callbacks.list {kw} returned {res['returned']}: it should have found records")
        out[name] = res
    # The store read alone, without the runner machinery.
    store = factory.build_store(opts, factory.load_config(opts))
    res, _ = _timed(lambda: store.get(due_jobs[0][1], due_jobs[0][0]), 20, 30)
    out["store_get"] = res
    store.close()
    ctx.results["scenarios"]["store"] = out
    say(f"  -> {json.dumps(out)}")
