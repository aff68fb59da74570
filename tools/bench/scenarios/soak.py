"""Soak (issue 15, item 6): ``--soak-minutes`` at a steady ``--soak-rate``
returns/s to a receiver that fails one request in ten (``/every/10/503``),
on a master of its own. Each job goes as in production: record written,
job cache prepared and the return stored, then ``new`` and ``ret`` on the bus.

Sampled every ``--soak-sample`` s: the engine's RSS, its open file
descriptors and the store's size on disk (everything under
``<cachedir>/callbacks``); reported at the start and the end with their
slopes (least squares, per minute). Lost: a return whose COMMAND_EXECUTED
never got a 2xx within the wait after the load stops; must be 0.
"""

import os
import time

from tools.bench import say
from tools.bench.context import PROBE_WAIT, engine_config, probe_engine, wipe_store
from tools.bench.masters import CUTOFF_LINE, Master
from tools.bench.meter import CpuMeter, wait_for_quiet_machine

FLAKY_PATH = "/every/10/503"
#: Seconds to wait after the load for the last deliveries (retries every 1 s).
SETTLE_WAIT = 90


def store_bytes(master):
    """Bytes of every file under ``<cachedir>/callbacks`` (the embedded database
    and its WAL, or one file per record on the salt_cache localfs layout)."""
    total = 0
    stack = [os.path.join(master.config["cachedir"], "callbacks")]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def slope_per_minute(points):
    """Least-squares slope of ``[(t seconds, value)]``, per minute; None for < 2 points."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def _sample(ctx, master, t0):
    proc = master.engine_proc()
    if proc is None:
        return None
    try:
        rss, fds = proc.memory_info().rss / 2**20, proc.num_fds()
    except Exception:  # noqa: BLE001 - the engine restarted under us: skip this sample
        return None
    return {"t": round(time.time() - t0, 1), "rss_mb": round(rss, 1), "fds": fds,
            "store_mb": round(store_bytes(master) / 2**20, 2), "posts": ctx.receiver.counter.value}


def summarise(samples):
    """Start, end and slope per minute of each sampled figure."""
    out = {}
    for key in ("rss_mb", "fds", "store_mb"):
        points = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
        if not points:
            continue
        slope = slope_per_minute(points)
        out[key] = {"start": points[0][1], "end": points[-1][1],
                    "slope_per_min": None if slope is None else round(slope, 3)}
    return out


def run_soak(ctx):
    master = ctx.master = Master("soak", engine_config(ctx))
    wipe_store(master)
    master.start(need_engine=True)
    try:
        ctx.open_pool(master)
        if probe_engine(ctx) is None:
            raise RuntimeError(f"soak: the engine never delivered a probe webhook within {PROBE_WAIT} s")
        ctx.results["scenarios"]["soak"] = _soak(ctx, master)
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _soak(ctx, master):
    args = ctx.args
    seconds, rate = args.soak_minutes * 60, args.soak_rate
    n = int(seconds * rate) + ctx.pool.size
    jobs = ctx.jobs("soak", n)
    url = ctx.receiver.url(FLAKY_PATH)
    wait_for_quiet_machine(ctx, "soak")
    say(f"soak: {args.soak_minutes:g} min at {rate:.0f} returns/s, receiver failing 1 request in 10 "
        f"({FLAKY_PATH}); sampled every {args.soak_sample:g} s")
    parts = ctx.pool.split(jobs)
    start_at = time.time() + 1.0
    stop_at = start_at + seconds
    per = [{"jobs": part, "url": url, "rate": rate / ctx.pool.size, "start_at": start_at + k / rate,
            "stop_at": stop_at} for k, part in enumerate(parts)]
    cut0 = master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    samples = [s for s in [_sample(ctx, master, start_at)] if s]
    ctx.pool.send("soak", per)
    next_sample = time.time() + args.soak_sample
    while time.time() < stop_at:
        time.sleep(max(0.0, min(next_sample, stop_at) - time.time()))
        if time.time() >= next_sample:
            sample = _sample(ctx, master, start_at)
            if sample:
                samples.append(sample)
            next_sample += args.soak_sample
    results = ctx.pool.collect("soak", per, timeout=120)
    done = [job for part, res in zip(parts, results) for job in part[: res["n"]]]
    injected_rate = len(done) / max(1e-9, max(r["last"] for r in results) - min(r["first"] for r in results))
    lost, ok_dups, settle_s = _wait_delivered(ctx, done)
    end = _sample(ctx, master, start_at)
    if end:
        samples.append(end)
    cpu = meter.stop()
    res = {"minutes": args.soak_minutes, "target_rate": rate, "offered_rate": round(injected_rate, 1),
           "returns": len(done), "lost": len(lost), "lost_sample": lost[:10], "delivered_twice": ok_dups,
           "settle_s": settle_s, "fail_every": 10, "cutoffs": master.log_count(CUTOFF_LINE) - cut0,
           "samples": samples, "trend": summarise(samples), "cpu": cpu,
           "engine_cpu_us_per_webhook": round(meter.seconds.get("engine", 0.0) / max(1, len(done)) * 1e6, 1)}
    trend = res["trend"]
    say(f"  -> {len(done)} returns at {injected_rate:.0f}/s, lost {len(lost)}; "
        + "; ".join(f"{k} {v['start']} -> {v['end']} ({v['slope_per_min']:+}/min)" for k, v in trend.items()
                    if v["slope_per_min"] is not None) + f"; cpu {cpu}")
    if injected_rate < 0.9 * rate:
        ctx.note(f"soak: the injectors managed {injected_rate:.0f} returns/s of the {rate:.0f}/s asked (each return "
                 "writes its record and the job cache, as publishing does); the slopes are at that rate")
    if lost:
        ctx.note(f"soak: {len(lost)} webhook(s) never delivered (2xx), e.g. {lost[:3]}")
    return res


def _wait_delivered(ctx, done):
    """Wait (bounded) until every job's COMMAND_EXECUTED got a 2xx. Returns
    (jobs never delivered, webhooks answered 2xx more than once, seconds waited)."""
    wanted = {(jid, dev) for jid, dev in done}
    started, last_missing, last_change = time.time(), None, time.time()
    while True:
        ok, dups = {}, 0
        for row in ctx.receiver.dump("soak"):
            if row[3] == "COMMAND_EXECUTED" and len(row) > 5 and 200 <= (row[5] or 0) < 300:
                key = (row[1], row[2])
                dups += key in ok
                ok[key] = True
        missing = wanted - ok.keys()
        now = time.time()
        if missing != last_missing:
            last_missing, last_change = missing, now
        if not missing or now - started > SETTLE_WAIT or now - last_change > 30:
            return sorted(missing), dups, round(now - started, 1)
        time.sleep(2)
