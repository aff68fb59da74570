"""The state of one bench run (``Ctx``) and the helpers every scenario uses."""

import secrets
import shutil
import time
from pathlib import Path

from tools.bench import SPAWN, say
from tools.bench.injectors import JidSource, Pool
from tools.bench.stats import median_run

PROBE_WAIT = 90


class Ctx:
    """What the scenarios share: flags, the receiver, the master and the
    injector pool of the moment, and the results being gathered."""

    def __init__(self, args):
        self.args = args
        self.secret = secrets.token_urlsafe(32)
        self.jids = JidSource()
        self.results = {"scenarios": {}, "notes": []}
        self.receiver = None
        self.master = None
        self.pool = None
        self.extra_pids = {}  # pid -> role, for the CPU split
        self.bus_counter = SPAWN.RawValue("q", 0)
        self.profile = None
        self.bus_event_ceiling = None  # set by the bus part before its latency runs

    def note(self, text):
        self.results["notes"].append(text)
        say(f"NOTE: {text}")

    def jobs(self, prefix, n, devices=None):
        """``n`` new (jid, device) pairs; devices are ``<prefix>-<k>``, which the receiver counts by."""
        devices = devices or self.args.devices
        return [(jid, f"{prefix}-{i % devices:05d}") for i, jid in enumerate(self.jids.take(n))]

    def counters(self):
        return {"receiver": self.receiver.counter, "bus": self.bus_counter}

    def open_pool(self, master):
        master.write()
        self.pool = Pool(master.conf_path, self.args.procs, self.counters())

    def close_pool(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None


#: Latency rate without a measured bus ceiling (``--rate 0`` and ``--only`` without ``bus``).
FALLBACK_RATE = 1000.0


def latency_rate(ctx):
    """Returns/s of the latency runs: ``--rate``, or half the bus ceiling (event
    injection) measured earlier in this run: the rate issue 13's added latency is judged at."""
    if ctx.args.rate:
        return ctx.args.rate
    ceiling = ctx.results["scenarios"].get("ceiling_bus", {}).get("event", {}).get("rate")
    if not ceiling:
        ceiling = ctx.bus_event_ceiling
    return round(ceiling / 2) if ceiling else FALLBACK_RATE


def repeated(ctx, key, run_once, metric, unit="/s"):
    """Run a scenario ``--repeat`` times (``run_once(name, i)`` returns a
    result dict; ``name`` is ``key``, then ``key#2``...) and return the
    median run by ``metric``, with every run beside it."""
    runs = [run_once(key if i == 0 else f"{key}#{i + 1}", i) for i in range(ctx.args.repeat)]
    result = median_run(runs, metric)
    if len(runs) > 1:
        values = ", ".join("-" if metric(r) is None else f"{metric(r):.1f}" for r in runs)
        say(f"  => {key}: median of {len(runs)} runs {metric(result) or 0:.1f}{unit} (runs: {values})")
    return result


def engine_config(ctx):
    block = {"secrets": {"default": ctx.secret}, "allow_networks": ["127.0.0.0/8"], "retry_delays": [1]}
    block.update(ctx.args.callbacks_overrides)
    return {"engines": [{"callbacks": {}}], "callbacks": block}


def wipe_store(master):
    cache = Path(master.config["cachedir"])
    for sub in ("callbacks", "jobs"):
        shutil.rmtree(cache / sub, ignore_errors=True)


def write_records(ctx, jobs, created, timeout, url_by_prefix=None, finished=False):
    """Callback records for ``jobs`` straight into the store (as the runner
    would write them); ``created``/``timeout``: one value, or one per job."""
    url_by_prefix = url_by_prefix or {}
    default = ctx.receiver.url()
    prefixes = {dev.split("-", 1)[0] for _, dev in jobs}
    urls = {p: url_by_prefix.get(p, default) for p in prefixes}
    full = []
    for i, (jid, dev) in enumerate(jobs):
        c = created[i] if isinstance(created, list) else created
        t = timeout[i] if isinstance(timeout, list) else timeout
        full.append((jid, dev, c, t))
    return ctx.pool.write_records(full, urls, timeout=120 + len(jobs) / 100, finished=finished)


def probe_engine(ctx, timeout=PROBE_WAIT):
    """Send probe jobs until one webhook comes back: the engine is listening.
    Returns the seconds it took, or None."""
    started = time.time()
    before = ctx.receiver.count("probe", "COMMAND_EXECUTED")
    while time.time() - started < timeout:
        jobs = ctx.jobs("probe", 1)
        write_records(ctx, jobs, time.time(), 600)
        ctx.pool.run("inject", [{"jobs": jobs, "mode": "event", "new": True, "rate": None,
                                 "start_at": 0, "window": None, "counter": None, "base": 0}], 30)
        got, _ = ctx.receiver.wait_for_count("probe", "COMMAND_EXECUTED", before + 1, timeout=2.0)
        if got > before:
            return time.time() - started
    return None


def deliveries(ctx, prefix, state="COMMAND_EXECUTED"):
    """Arrivals for a prefix: unique per (jid, device, state), duplicates counted."""
    rows = ctx.receiver.dump(prefix)
    seen, unique, dups = set(), [], 0
    for row in rows:
        key = (row[1], row[2], row[3])
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        if row[3] == state:
            unique.append(row)
    return unique, dups
