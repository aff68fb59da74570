"""Benchmark of the callbacks engine on a real salt-master: ``make bench``.

Starts what it needs under ``.bench/`` (wiped at start): a fast loopback
webhook receiver (aiohttp, its own process, plus a "black hole" port that
accepts connections and never answers), salt-masters as the current user on
free ports, and a pool of injector processes. Then it measures, prints ONE
table on stdout (progress goes to stderr) and writes the results as JSON
(``--json``, default ``.bench/results.json``).

What is measured, and how (one scenario each):

ceiling/http    a bare aiohttp client (own process, ``--http-concurrency``
                connections) posts the same signed COMMAND_EXECUTED bodies
                (``payload.encode_executed`` + ``signing.signed_headers``) to
                the same receiver.
ceiling/bus     a master with no engine and no Reactor; a subscriber process
                (``get_master_event(listen=True)`` + ``set_event_handler``, the
                API the engine uses) counts ``salt/job/*/ret/*`` events while
                the same injectors send the same load.
engine/tput     closed loop: the injectors keep at most ``--window`` returns
                outstanding (injected, not yet received) so the bus never cuts
                the engine off; deliveries/s is taken over the 10-90 % span of
                receiver arrivals. Run twice: ``store_job`` injection (the
                issue's definition) and ``event`` injection (see below).
engine/latency  open loop at ``--rate`` returns/s for ``--latency-seconds``;
                latency = receiver arrival - the ret event's ``_stamp`` (set by
                Salt's ``fire_event`` as the event enters the bus).
engine/hole     the same, with ``--hole-share`` of the returns aimed at a
                receiver that never answers; p99 of the healthy ones.
engine/burst    ``--burst`` returns fired as fast as the injectors can (event
                injection; the jobs were announced and their returns written to
                the master job cache beforehand); lost = no COMMAND_EXECUTED
                within the wait.
pending         ``--pending`` records, most with far deadlines, written into
                the store with the master stopped, resumed by a restart (resume
                time, RSS); then ``--due-rate`` x ``--due-seconds`` more records
                announced with ``salt/job/<jid>/new`` whose deadlines fall due
                at ``--due-rate``/s; lateness = TIMEOUT arrival - deadline.
                Engine RSS (psutil) before any record and with all pending.
profiles        ``--profile tput,pending,burst``: py-spy (``--idle``) on the
                engine's main thread, summarised as shares of wall time.
store           ``callbacks.get`` / ``callbacks.list`` through
                ``salt.runner.RunnerClient`` with the pending records present.
baseline        a master with the Reactor on ``salt/job/*/ret/*`` calling the
                ``http.query`` runner: the same store_job load (smaller: it
                manages tens of webhooks/s) and the same burst.

Before each scenario the bench waits up to ``--quiet-wait`` s for processes
outside it to go quiet; each scenario's CPU split (engine, bus, injectors,
receiver, ..., and "background": everything outside the bench) is in the JSON.

Injection modes (both go through Salt's own APIs, both put the same event on
the same bus):

store_job  each return: ``salt.utils.job.store_job(opts, load, event=ev,
           mminion=mm)`` with a sync master event, as an MWorker does. The
           job's load was saved beforehand (``local_cache.prep_jid`` +
           ``save_load`` with its minion), as publishing does. Costs ~2 ms of
           CPU per return in Salt itself (fsync + a thread per fire_event).
event      the ret event only, via ``fire_event_async`` with
           ``master_async_mworker`` (Salt's async MWorker publish path, no
           thread per event). The latency runs and the burst write each
           return into the master job cache beforehand (prep_jid, save_load,
           returner: what store_job leaves there), so an engine the bus cuts
           off can catch up; the closed-loop throughput run writes none (its
           window keeps the bus from cutting anyone off). Used where store_job
           cannot offer the load on this machine: the rate scenarios, the
           burst and the engine capacity row.

Each job targets one device (``<scenario>-<n>``) and is announced with a
``salt/job/<jid>/new`` event before its return, as the master does when it
publishes. Every wait is bounded.
"""

import argparse
import asyncio
import datetime
import json
import math
import multiprocessing as mp
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / ".bench"
BIN = Path(sys.executable).parent
ENGINE_TITLE = "Engine(salt.loaded.ext.engines.callbacks)"
CUTOFF_LINE = "Publisher discarding slow subscriber"
SPAWN = mp.get_context("spawn")

#: Timeouts (seconds) for things that should be quick.
MASTER_START_WAIT = 60
MASTER_STOP_WAIT = 20
PROBE_WAIT = 90
WORKER_START_WAIT = 90


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- small helpers --------------------------------------------------------------


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms_summary(seconds):
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "n": len(seconds),
        "p50_ms": round(pct(seconds, 50) * 1000, 2),
        "p99_ms": round(pct(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 2),
    }


def sustained_rate(times):
    """Arrivals per second over the 10-90 % span (ramp-up and tail left out)."""
    times = sorted(times)
    n = len(times)
    if n < 2:
        return None
    if n < 50:
        span = times[-1] - times[0]
        return (n - 1) / span if span > 0 else None
    i, j = int(n * 0.1), int(n * 0.9)
    span = times[j] - times[i]
    return (j - i) / span if span > 0 else None


def stamp_to_ts(stamp):
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


class JidSource:
    """Unique 20-digit jids of gen_jid's form (local time, microseconds), increasing."""

    def __init__(self):
        self.last = datetime.datetime.now()

    def take(self, n):
        start = max(datetime.datetime.now(), self.last + datetime.timedelta(microseconds=1))
        self.last = start + datetime.timedelta(microseconds=n)
        return [(start + datetime.timedelta(microseconds=i)).strftime("%Y%m%d%H%M%S%f") for i in range(n)]


# -- the receiver (its own process) ---------------------------------------------


def receiver_main(conn, port, hole_port, secret, counter, verify_every):
    """aiohttp on 127.0.0.1:port records every webhook; hole_port never answers."""
    import json as json_
    import time as time_

    from aiohttp import web

    from salt_callbacks.exceptions import VerificationError
    from salt_callbacks.signing import verify

    arrivals = {}  # device prefix -> [(arrival, jid, device, state, stamp)]
    counts = {}  # prefix -> state -> n
    info = {"checked": 0, "bad_signature": 0, "unparsed": 0, "hole_connections": 0, "n": 0}

    async def hook(request):
        body = await request.read()
        now = time_.time()
        try:
            doc = json_.loads(body)
            if "state" in doc and "device_id" in doc:
                dev, jid, state = doc["device_id"], doc["jid"], doc["state"]
                resp = doc.get("response")
                stamp = resp["data"].get("_stamp") if resp else None
            else:  # the Reactor posts the raw event data
                dev, jid, state, stamp = doc.get("id"), doc.get("jid"), "REACTOR", doc.get("_stamp")
        except Exception:  # noqa: BLE001 - count and answer
            info["unparsed"] += 1
            return web.Response(status=200)
        info["n"] += 1
        counter.value += 1
        if verify_every and info["n"] % verify_every == 0 and "webhook-signature" in request.headers:
            info["checked"] += 1
            try:
                verify(body, request.headers, secret, now=now)
            except VerificationError:
                info["bad_signature"] += 1
        prefix = str(dev).split("-", 1)[0]
        arrivals.setdefault(prefix, []).append((now, jid, dev, state, stamp))
        per = counts.setdefault(prefix, {})
        per[state] = per.get(state, 0) + 1
        return web.Response(status=200)

    async def stats(request):
        return web.json_response({"counts": counts, **info})

    async def dump(request):
        return web.json_response(arrivals.get(request.query.get("prefix", ""), []))

    async def hole(reader, writer):
        info["hole_connections"] += 1
        try:
            while await reader.read(65536):
                pass
        except Exception:  # noqa: BLE001
            pass
        finally:
            writer.close()

    async def main():
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/hook", hook)
        app.router.add_get("/stats", stats)
        app.router.add_get("/dump", dump)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        await asyncio.start_server(hole, "127.0.0.1", hole_port, backlog=2048)
        conn.send("ready")
        await asyncio.Event().wait()

    asyncio.run(main())


class Receiver:
    def __init__(self, secret, verify_every):
        self.port, self.hole_port = free_ports(2)
        self.counter = SPAWN.RawValue("q", 0)
        parent, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=receiver_main, daemon=True, name="bench-receiver",
                                  args=(child, self.port, self.hole_port, secret, self.counter, verify_every))
        self.proc.start()
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("the receiver did not start within 30 s")
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.hole_url = f"http://127.0.0.1:{self.hole_port}/hook"

    def _get(self, path, timeout=60):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def stats(self):
        return self._get("/stats")

    def count(self, prefix, state):
        return self.stats()["counts"].get(prefix, {}).get(state, 0)

    def dump(self, prefix):
        return self._get(f"/dump?prefix={prefix}")

    def wait_for(self, prefix, state, expected, timeout, stall=None):
        """Poll until ``expected`` arrivals, no progress for ``stall`` s, or ``timeout``.
        Returns (count, still_progressing)."""
        deadline = time.time() + timeout
        last, last_change = -1, time.time()
        while True:
            got = self.count(prefix, state)
            now = time.time()
            if got != last:
                last, last_change = got, now
            if got >= expected:
                return got, False
            if stall is not None and now - last_change >= stall:
                return got, False
            if now >= deadline:
                return got, True
            time.sleep(0.2)

    def stop(self):
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# -- injector workers (their own processes) -------------------------------------


def _ret_load(jid, dev):
    return {"id": dev, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0,
            "success": True, "cmd": "_return",
            "_stamp": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def _new_data(jid, dev):
    return {"jid": jid, "tgt_type": "glob", "tgt": dev, "user": "root", "fun": "test.ping", "arg": [],
            "minions": [dev], "missing": []}


class Worker:
    """One injector process's Salt objects, made on first use."""

    def __init__(self, conf_path, index, injected, counters):
        import salt.config

        self.opts = salt.config.master_config(conf_path)
        if not str(self.opts["cachedir"]).startswith(str(BENCH)):
            raise RuntimeError(f"refusing to write outside {BENCH}: cachedir is {self.opts['cachedir']}")
        self.index = index
        self.injected = injected
        self.counters = counters
        self._mminion = self._event = self._store = None
        self._loop = self._aevent = None

    # Salt objects
    def mminion(self):
        if self._mminion is None:
            import salt.minion

            self._mminion = salt.minion.MasterMinion(self.opts, states=False, rend=False)
        return self._mminion

    def event(self):
        if self._event is None:
            import salt.utils.event

            self._event = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        return self._event

    def store(self):
        if self._store is None:
            from salt_callbacks import factory

            self._store = factory.build_store(self.opts, factory.load_config(self.opts))
        return self._store

    def aloop(self):
        if self._loop is None:
            import salt.utils.event

            self._loop = asyncio.new_event_loop()
            aopts = dict(self.opts)
            aopts["master_async_mworker"] = True  # Salt's async publish path: no thread per event
            self._aevent = salt.utils.event.get_master_event(aopts, aopts["sock_dir"], listen=False,
                                                             io_loop=self._loop)
        return self._loop

    # commands
    def write_records(self, jobs, url_by_prefix):
        from salt_callbacks.records import Record

        store = self.store()
        started = time.time()
        for jid, dev, created, timeout in jobs:
            url = url_by_prefix[dev.split("-", 1)[0]]
            record = Record(jid=jid, device_id=dev, url=url, created=created, timeout=timeout,
                            command={"returner": None, "command": "test.ping", "arg": []},
                            signer="default", user="bench")
            store.add_job(jid, [record], created)
        return {"n": len(jobs), "seconds": time.time() - started}

    def prep_jobcache(self, jobs, with_return):
        """What publishing writes (prep_jid + save_load with the minion), and
        with_return: the return too, as store_job's returner call would."""
        returners = self.mminion().returners
        cache = self.opts["master_job_cache"]
        started = time.time()
        for jid, dev in jobs:
            returners[f"{cache}.prep_jid"](passed_jid=jid)
            returners[f"{cache}.save_load"](jid, {"jid": jid, "fun": "test.ping", "arg": [], "tgt": dev,
                                                  "tgt_type": "glob", "user": "root"}, minions=[dev])
            if with_return:
                returners[f"{cache}.returner"](_ret_load(jid, dev))
        return {"n": len(jobs), "seconds": time.time() - started}

    def _outstanding(self, counter, base):
        return sum(self.injected) - (counter.value - base)

    def inject(self, jobs, mode, new, rate, start_at, window, counter, base, ret=True, stop_at=None):
        counter = self.counters[counter] if counter else None
        if mode == "store_job":
            return self._inject_sync(jobs, new, rate, start_at, window, counter, base, stop_at)
        return self.aloop().run_until_complete(
            self._inject_async(jobs, new, rate, start_at, window, counter, base, ret, stop_at))

    def _inject_sync(self, jobs, new, rate, start_at, window, counter, base, stop_at):
        import salt.utils.job

        ev, mm = self.event(), self.mminion()
        while time.time() < start_at:
            time.sleep(0.001)
        first, done = time.time(), 0
        for i, (jid, dev) in enumerate(jobs):
            if rate:
                delay = start_at + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            if window:
                while self._outstanding(counter, base) >= window:
                    time.sleep(0.001)
            if stop_at and time.time() >= stop_at:
                break
            if new:
                ev.fire_event(_new_data(jid, dev), f"salt/job/{jid}/new")
            salt.utils.job.store_job(self.opts, _ret_load(jid, dev), event=ev, mminion=mm)
            self.injected[self.index] += 1
            done += 1
        return {"n": done, "first": first, "last": time.time()}

    async def _inject_async(self, jobs, new, rate, start_at, window, counter, base, ret, stop_at):
        ev = self._aevent
        while time.time() < start_at:
            await asyncio.sleep(0.001)
        first, done = time.time(), 0
        for i, (jid, dev) in enumerate(jobs):
            if rate:
                delay = start_at + i / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if window:
                while self._outstanding(counter, base) >= window:
                    await asyncio.sleep(0.001)
            if stop_at and time.time() >= stop_at:
                break
            if new:
                await ev.fire_event_async(_new_data(jid, dev), f"salt/job/{jid}/new")
            if ret:
                await ev.fire_event_async(_ret_load(jid, dev), f"salt/job/{jid}/ret/{dev}")
            self.injected[self.index] += 1
            done += 1
        return {"n": done, "first": first, "last": time.time()}

    def close(self):
        for ev in (self._event, self._aevent):
            if ev is not None:
                try:
                    ev.destroy()
                except Exception:  # noqa: BLE001
                    pass

    def hello(self):
        self.aloop().run_until_complete(self._aevent.fire_event_async({"hello": True}, "bench/hello"))
        return {}


def worker_main(conn, conf_path, index, injected, counters):
    try:
        worker = Worker(conf_path, index, injected, counters)
    except Exception:  # noqa: BLE001
        conn.send({"error": traceback.format_exc()})
        return
    conn.send("ready")
    while True:
        try:
            cmd, kwargs = conn.recv()
        except EOFError:
            return
        if cmd == "quit":
            worker.close()
            conn.send({})
            return
        try:
            result = getattr(worker, cmd)(**kwargs)
        except Exception:  # noqa: BLE001 - reported to the coordinator
            result = {"error": traceback.format_exc()}
        conn.send(result)


class Pool:
    """``procs`` injector processes bound to one master's config."""

    def __init__(self, conf_path, procs, counters):
        self.injected = SPAWN.RawArray("q", procs)
        self.conns, self.procs = [], []
        for k in range(procs):
            parent, child = SPAWN.Pipe()
            proc = SPAWN.Process(target=worker_main, args=(child, str(conf_path), k, self.injected, counters),
                                 daemon=True, name=f"bench-injector-{k}")
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if not conn.poll(WORKER_START_WAIT):
                raise RuntimeError(f"an injector did not start within {WORKER_START_WAIT} s")
            msg = conn.recv()
            if msg != "ready":
                raise RuntimeError(f"an injector failed to start: {msg}")

    @property
    def size(self):
        return len(self.conns)

    def pids(self):
        return [p.pid for p in self.procs]

    def run(self, cmd, per_worker, timeout):
        """Send ``cmd`` with per-worker kwargs to all workers at once; gather results."""
        for conn, kwargs in zip(self.conns, per_worker):
            conn.send((cmd, kwargs))
        results, deadline = [], time.time() + timeout
        for conn in self.conns[: len(per_worker)]:
            if not conn.poll(max(0.0, deadline - time.time())):
                raise RuntimeError(f"injector command {cmd} did not finish within {timeout:.0f} s")
            result = conn.recv()
            if isinstance(result, dict) and "error" in result:
                raise RuntimeError(f"injector command {cmd} failed:\n{result['error']}")
            results.append(result)
        return results

    def split(self, items):
        return [items[k:: self.size] for k in range(self.size)]

    def write_records(self, jobs, url_by_prefix, timeout):
        parts = self.split(jobs)
        started = time.time()
        self.run("write_records", [{"jobs": p, "url_by_prefix": url_by_prefix} for p in parts], timeout)
        return len(jobs) / max(1e-9, time.time() - started)

    def prep_jobcache(self, jobs, with_return, timeout):
        self.run("prep_jobcache", [{"jobs": p, "with_return": with_return} for p in self.split(jobs)], timeout)

    def inject(self, jobs, mode, new=True, rate=None, window=None, counter=None, timeout=600, ret=True,
               lead=0.5, seconds=None):
        """Returns {"n", "first", "last", "rate"} over all workers."""
        for k in range(self.size):
            self.injected[k] = 0
        base = self.counters_value(counter)
        parts = self.split(jobs)
        start_at = time.time() + lead
        stop_at = start_at + seconds if seconds else None
        per = []
        for k, part in enumerate(parts):
            per.append({"jobs": part, "mode": mode, "new": new, "ret": ret,
                        "rate": (rate / self.size) if rate else None,
                        "start_at": start_at + (k / rate if rate else 0.0),
                        "window": window, "counter": counter, "base": base, "stop_at": stop_at})
        if mode == "store_job":
            per = [{k: v for k, v in p.items() if k != "ret"} for p in per]
        results = self.run("inject", per, timeout)
        first = min(r["first"] for r in results)
        last = max(r["last"] for r in results)
        n = sum(r["n"] for r in results)
        return {"n": n, "first": first, "last": last, "rate": n / max(1e-9, last - first)}

    counters = None

    def counters_value(self, name):
        return self.counters[name].value if name else 0

    def hello(self):
        self.run("hello", [{}], 30)

    def close(self):
        for conn in self.conns:
            try:
                conn.send(("quit", {}))
            except (OSError, BrokenPipeError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# -- the bus-ceiling subscriber (its own process) -------------------------------


def subscriber_main(conn, conf_path, counter):
    import salt.config
    import salt.utils.event

    opts = salt.config.master_config(conf_path)

    async def main():
        loop = asyncio.get_running_loop()
        ev = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True, io_loop=loop)
        unpack = salt.utils.event.SaltEvent.unpack
        times = []
        hello = asyncio.Event()

        async def handle(raw):
            tag, data = unpack(raw)
            if tag.startswith("salt/job/") and "/ret/" in tag:
                counter.value += 1
                times.append((time.time(), data.get("_stamp")))
            elif tag == "bench/hello":
                hello.set()

        ev.set_event_handler(handle)
        conn.send("subscribed")
        try:
            await asyncio.wait_for(hello.wait(), 30)
        except asyncio.TimeoutError:
            conn.send("no hello")
            return
        conn.send("ready")
        while True:
            if conn.poll():
                msg = conn.recv()
                if msg == "times":
                    conn.send(list(times))
                    times.clear()
                elif msg == "quit":
                    break
            await asyncio.sleep(0.05)
        ev.destroy()

    asyncio.run(main())


# -- the bare HTTP client ceiling (its own process) ------------------------------


def http_client_main(conn, url, secret, n, concurrency):
    import aiohttp

    from salt_callbacks.payload import encode_executed
    from salt_callbacks.signing import delivery_id, signed_headers

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
    base = int(datetime.datetime.now().strftime("%Y%m%d%H%M%S%f"))
    bodies = []
    for i in range(n):
        jid, dev = str(base + i), f"http-{i % 1000:05d}"
        data = {"cmd": "_return", "id": dev, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True,
                "retcode": 0, "success": True, "_stamp": stamp}
        bodies.append((jid, dev, encode_executed(jid, dev, data)))

    async def main():
        latencies, failures = [], 0
        nxt = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def client():
                nonlocal nxt, failures
                while nxt < n:
                    jid, dev, body = bodies[nxt]
                    nxt += 1
                    started = time.time()
                    headers = signed_headers(body, [secret], delivery_id(jid, dev, "COMMAND_EXECUTED"), started)
                    try:
                        async with session.post(url, data=body, headers=headers,
                                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
                            await resp.read()
                            if resp.status != 200:
                                failures += 1
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        failures += 1
                    latencies.append(time.time() - started)

            t0 = time.time()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            t1 = time.time()
        return {"n": n, "seconds": t1 - t0, "rate": n / (t1 - t0), "failures": failures,
                "latency": ms_summary(latencies), "concurrency": concurrency}

    conn.send(asyncio.run(main()))


# -- salt-masters ----------------------------------------------------------------


class Master:
    def __init__(self, name, user, extra):
        self.name = name
        self.root = BENCH / name
        self.conf_dir = self.root / "conf"
        self.conf_path = self.conf_dir / "master"
        self.log = self.root / "log" / "master.log"
        self.sock_dir = self.root / "sock"
        self.proc = None
        publish_port, ret_port = free_ports(2)
        self.config = {
            "root_dir": str(self.root),
            "pki_dir": str(self.root / "pki"),
            "cachedir": str(self.root / "cache"),
            "sock_dir": str(self.sock_dir),
            "pidfile": str(self.root / "salt-master.pid"),
            "user": user,
            "interface": "127.0.0.1",
            "publish_port": publish_port,
            "ret_port": ret_port,
            "worker_threads": 2,  # no minions connect: returns are injected
            "log_file": str(self.log),
            "key_logfile": str(self.log),
            "log_level": "warning",
            "log_level_logfile": "warning",  # as in production; info would log every delivery
            "file_roots": {"base": [str(self.root / "file_roots")]},
            "pillar_roots": {"base": [str(self.root / "pillar_roots")]},
            **extra,
        }
        longest = str(self.sock_dir / "master_event_pull.ipc")
        if len(longest.encode()) > 107:
            raise RuntimeError(f"socket path too long for Unix sockets: {longest}")

    def write(self):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        self.conf_path.chmod(0o600)

    def clear_sockets(self):
        for name in ("master_event_pub.ipc", "master_event_pull.ipc"):
            try:
                (self.sock_dir / name).unlink()
            except FileNotFoundError:
                pass

    def start(self, need_engine=False, need_reactor=False):
        self.write()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.clear_sockets()
        out = open(self.root / "salt-master.out", "ab")
        self.proc = subprocess.Popen([str(BIN / "salt-master"), "-c", str(self.conf_dir), "-l", "warning"],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        out.close()
        self.started_at = time.time()
        deadline = time.time() + MASTER_START_WAIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"salt-master {self.name} exited with {self.proc.returncode}; see {self.log}")
            socks = all((self.sock_dir / n).exists() for n in ("master_event_pub.ipc", "master_event_pull.ipc"))
            ok = socks and (not need_engine or self.engine_proc()) and (not need_reactor or self.find("Reactor"))
            if ok:
                break
            if time.time() > deadline:
                raise RuntimeError(f"salt-master {self.name} not up within {MASTER_START_WAIT} s; see {self.log}")
            time.sleep(0.1)
        time.sleep(0.5)  # let the publisher accept connections
        say(f"salt-master {self.name} up (pid {self.proc.pid}) in {time.time() - self.started_at:.1f} s")

    def children(self):
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def find(self, title):
        import psutil

        for child in self.children():
            try:
                if title in " ".join(child.cmdline()) or child.name() == title:
                    return child
            except psutil.Error:
                continue
        return None

    def engine_proc(self):
        return self.find(ENGINE_TITLE)

    def proc_roles(self):
        """pid -> role name for this master's processes."""
        import psutil

        roles = {}
        if self.proc is None:
            return roles
        roles[self.proc.pid] = "master"
        for child in self.children():
            try:
                line = " ".join(child.cmdline())
                name = child.name()
            except psutil.Error:
                continue
            if ENGINE_TITLE in line:
                roles[child.pid] = "engine"
            elif "EventPublisher" in line or name == "EventPublisher":
                roles[child.pid] = "bus"
            elif "Reactor" in line:
                roles[child.pid] = "reactor"
            elif "EventMonitor" in line:
                roles[child.pid] = "monitor"
            else:
                roles[child.pid] = "master"
        return roles

    def log_count(self, text):
        try:
            return self.log.read_text(encoding="utf-8", errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def stop(self):
        if self.proc is None:
            return
        started = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        while time.time() - started < MASTER_STOP_WAIT:
            if self.proc.poll() is not None and not _group_alive(self.proc.pid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only its processes
            except ProcessLookupError:
                pass
            self.proc.wait(5)
            say(f"salt-master {self.name} killed: still running {MASTER_STOP_WAIT} s after SIGTERM")
        say(f"salt-master {self.name} stopped in {time.time() - started:.1f} s")
        self.proc = None


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# -- CPU accounting ---------------------------------------------------------------


class CpuMeter:
    """Cores used per role over a span, and by processes outside the bench."""

    def __init__(self, ctx):
        self.ctx = ctx

    def _snapshot(self):
        import psutil

        roles = {}
        if self.ctx.master is not None:
            roles.update(self.ctx.master.proc_roles())
        if self.ctx.receiver is not None:
            roles[self.ctx.receiver.proc.pid] = "receiver"
        if self.ctx.pool is not None:
            for pid in self.ctx.pool.pids():
                roles[pid] = "injectors"
        roles.update(self.ctx.extra_pids)
        mine = {os.getpid()}
        try:
            mine.update(c.pid for c in psutil.Process().children(recursive=True))
        except psutil.Error:
            pass
        per = {}
        for pid in mine | set(roles):
            try:
                t = psutil.Process(pid).cpu_times()
                per[pid] = t.user + t.system
            except psutil.Error:
                continue
        sys_t = psutil.cpu_times()
        busy = sum(getattr(sys_t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        return time.time(), busy, per, roles

    def start(self):
        self._start = self._snapshot()
        return self

    def stop(self):
        t1, busy1, per1, roles = self._snapshot()
        t0, busy0, per0, _ = self._start
        wall = max(1e-9, t1 - t0)
        used = {}
        ours = 0.0
        for pid, cpu in per1.items():
            delta = cpu - per0.get(pid, 0.0)
            ours += delta
            role = roles.get(pid, "bench")
            used[role] = used.get(role, 0.0) + delta
        result = {role: round(v / wall, 2) for role, v in sorted(used.items())}
        result["background"] = round(max(0.0, (busy1 - busy0) - ours) / wall, 2)
        result["wall_s"] = round(wall, 1)
        return result


# -- the run ------------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.args = args
        self.secret = secrets.token_urlsafe(32)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.jids = JidSource()
        self.results = {"scenarios": {}, "notes": []}
        self.receiver = None
        self.master = None
        self.pool = None
        self.extra_pids = {}
        self.bus_counter = SPAWN.RawValue("q", 0)
        self.profile = None

    def note(self, text):
        self.results["notes"].append(text)
        say(f"NOTE: {text}")

    def jobs(self, prefix, n, devices=None):
        devices = devices or self.args.devices
        return [(jid, f"{prefix}-{i % devices:05d}") for i, jid in enumerate(self.jids.take(n))]

    def counters(self):
        return {"receiver": self.receiver.counter, "bus": self.bus_counter}

    def open_pool(self, master):
        master.write()
        self.pool = Pool(master.conf_path, self.args.procs, self.counters())
        self.pool.counters = self.counters()

    def close_pool(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def wait_for_quiet_machine(ctx, name):
    """Before a scenario: wait (at most --quiet-wait s) until processes outside
    the bench use < --quiet-cores cores, so their load does not distort it."""
    limit, threshold = ctx.args.quiet_wait, ctx.args.quiet_cores
    if limit <= 0:
        return
    started, level = time.time(), None
    while True:
        meter = CpuMeter(ctx).start()
        time.sleep(1.0)
        level = meter.stop()["background"]
        if level < threshold or time.time() - started >= limit:
            break
    waited = time.time() - started
    ctx.results.setdefault("quiet_waits", {})[name] = {"waited_s": round(waited, 1), "background": level}
    if level >= threshold:
        say(f"  (machine still busy before {name}: {level:.2f} cores used outside the bench after {waited:.0f} s)")
    elif waited > 1.5:
        say(f"  (waited {waited:.0f} s for other processes on the machine to calm down)")


def engine_config(ctx):
    block = {"secrets": {"default": ctx.secret}, "allow_networks": ["127.0.0.0/8"], "retry_delays": [1]}
    block.update(ctx.args.callbacks_overrides)
    return {"engines": [{"callbacks": {}}], "callbacks": block}


def wipe_store(master):
    cache = Path(master.config["cachedir"])
    for sub in ("callbacks", "jobs"):
        shutil.rmtree(cache / sub, ignore_errors=True)


def write_records(ctx, jobs, created, timeout, url_by_prefix=None):
    url_by_prefix = url_by_prefix or {}
    default = ctx.receiver.url
    prefixes = {dev.split("-", 1)[0] for _, dev in jobs}
    urls = {p: url_by_prefix.get(p, default) for p in prefixes}
    full = []
    for i, (jid, dev) in enumerate(jobs):
        c = created[i] if isinstance(created, list) else created
        t = timeout[i] if isinstance(timeout, list) else timeout
        full.append((jid, dev, c, t))
    return ctx.pool.write_records(full, urls, timeout=120 + len(jobs) / 100)


def probe_engine(ctx, timeout=PROBE_WAIT):
    """Send probe jobs until one webhook comes back: the engine is listening."""
    started = time.time()
    before = ctx.receiver.count("probe", "COMMAND_EXECUTED")
    while time.time() - started < timeout:
        jobs = ctx.jobs("probe", 1)
        write_records(ctx, jobs, time.time(), 600)
        ctx.pool.run("inject", [{"jobs": jobs, "mode": "event", "new": True, "rate": None,
                                 "start_at": 0, "window": None, "counter": None, "base": 0}], 30)
        got, _ = ctx.receiver.wait_for("probe", "COMMAND_EXECUTED", before + 1, timeout=2.0)
        if got > before:
            return time.time() - started
    return None


def engine_rss_mb(ctx):
    proc = ctx.master.engine_proc()
    return proc.memory_info().rss / 2**20 if proc else None


def start_profile(ctx, seconds, name):
    if name.split("_")[0] not in ctx.args.profile:
        return
    pyspy = BIN / "py-spy"
    proc = ctx.master.engine_proc()
    if not pyspy.exists() or proc is None:
        ctx.note("--profile: py-spy not installed in the venv (pip install py-spy) or no engine process")
        return
    out = BENCH / f"engine-profile-{name}.txt"
    # --idle: the engine is one asyncio loop, so wall-clock shares (idle in
    # epoll included) say what holds the loop; --nonblocking: do not pause it.
    ctx.profile = (subprocess.Popen([str(pyspy), "record", "--idle", "--nonblocking", "-r", "100",
                                     "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-p", str(proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out, name)


def _frame_name(frame):
    return frame.split(" (", 1)[0]


def _category(frames):
    """What a sample of the engine's loop is doing, named by the innermost frame that says it."""
    for frame in reversed(frames):
        name = _frame_name(frame)
        if "PublishServer.publish" in frame or "SyncWrapper" in frame:
            return "Salt fire_event: PublishServer.publish via SyncWrapper (a thread per event)"
        if "salt_callbacks/" in frame and "run_engine" not in frame and "_call (" not in frame:
            return f"{name} (salt_callbacks)"
        if "salt/cache/" in frame:
            continue  # attribute to the salt_callbacks caller
        if "aiohttp/" in frame and "salt_callbacks" not in frame:
            continue
    return _frame_name(frames[-1])


def finish_profile(ctx):
    if ctx.profile is None:
        return
    proc, out, name = ctx.profile
    ctx.profile = None
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(5)
    if not out.exists():
        ctx.note(f"py-spy wrote no profile for {name}")
        return
    leaf, engine_frames, samples, idle, helper = {}, {}, 0, 0, 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        if not any("run_engine" in f for f in frames):
            helper += count  # Salt's helper threads (a thread per published event, resolvers)
            continue
        samples += count
        if "select (selectors.py" in frames[-1]:
            idle += count
            continue
        key = f"{_frame_name(frames[-1])}  ({frames[-1].rsplit('(', 1)[-1].rstrip(')')})"
        leaf[key] = leaf.get(key, 0) + count
        cat = _category(frames)
        engine_frames[cat] = engine_frames.get(cat, 0) + count
    share = lambda c: round(100.0 * c / max(1, samples), 1)  # noqa: E731
    ctx.results.setdefault("profiles", {})[name] = {
        "scenario": name, "file": str(out), "main_thread_samples": samples, "helper_thread_samples": helper,
        "idle_in_epoll_pct": share(idle),
        "top_leaf_pct": [(f, share(c)) for f, c in sorted(leaf.items(), key=lambda kv: -kv[1])[:15]],
        "top_categories_pct": [(f, share(c)) for f, c in
                                  sorted(engine_frames.items(), key=lambda kv: -kv[1])[:15]],
    }
    prof = ctx.results["profiles"][name]
    say(f"profile of the engine's main thread during {name}: {samples} samples, "
        f"{prof['idle_in_epoll_pct']}% idle in epoll; busiest leaf frames (% of wall time):")
    for frame, pc in prof["top_leaf_pct"][:8]:
        say(f"   {pc:5.1f}%  {frame}")
    say("  by what the loop is doing (% of wall time):")
    for frame, pc in prof["top_categories_pct"][:10]:
        say(f"   {pc:5.1f}%  {frame}")


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


# -- scenarios ----------------------------------------------------------------------


def run_http_ceiling(ctx):
    args = ctx.args
    wait_for_quiet_machine(ctx, "ceiling_http")
    say(f"ceiling/http: bare aiohttp client, {args.http_requests} signed posts, concurrency {args.http_concurrency}")
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=http_client_main, daemon=True, name="bench-http-client",
                         args=(child, ctx.receiver.url, ctx.secret, args.http_requests, args.http_concurrency))
    meter = CpuMeter(ctx)
    proc.start()
    ctx.extra_pids = {proc.pid: "http_client"}
    meter.start()
    if not parent.poll(120 + args.http_requests / 500):
        proc.terminate()
        raise RuntimeError("the HTTP ceiling client did not finish")
    result = parent.recv()
    result["cpu"] = meter.stop()
    proc.join(5)
    ctx.extra_pids = {}
    ctx.results["scenarios"]["ceiling_http"] = result
    say(f"  -> {result['rate']:.0f} posts/s, p50 {result['latency']['p50_ms']} ms, p99 "
        f"{result['latency']['p99_ms']} ms, failures {result['failures']}; cpu {result['cpu']}")


def run_bus_ceiling(ctx):
    args = ctx.args
    master = Master("plain", ctx.user, {})
    ctx.master = master
    master.start()
    parent, child = SPAWN.Pipe()
    sub = SPAWN.Process(target=subscriber_main, args=(child, str(master.conf_path), ctx.bus_counter),
                        daemon=True, name="bench-subscriber")
    sub.start()
    ctx.extra_pids = {sub.pid: "subscriber"}
    try:
        ctx.open_pool(master)
        if not parent.poll(60) or parent.recv() != "subscribed":
            raise RuntimeError("bus subscriber did not start")
        for _ in range(60):
            ctx.pool.hello()
            if parent.poll(0.5):
                msg = parent.recv()
                if msg != "ready":
                    raise RuntimeError(f"bus subscriber: {msg}")
                break
        else:
            raise RuntimeError("bus subscriber never saw the hello event")
        out = {}
        for mode, n in (("store_job", args.sj_returns), ("event", args.returns)):
            jobs = ctx.jobs("bus", n)
            if mode == "store_job":
                ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
            wait_for_quiet_machine(ctx, f"ceiling_bus_{mode}")
            say(f"ceiling/bus ({mode}): {n} returns (<= {args.tput_seconds:.0f} s), window {args.window}, "
                f"{args.procs} injectors, no engine")
            meter = CpuMeter(ctx).start()
            inj = ctx.pool.inject(jobs, mode, new=True, window=args.window, counter="bus",
                                  timeout=120 + n / 50, seconds=args.tput_seconds)
            rows = _subscriber_rows(parent, settle=2.0)
            cpu = meter.stop()
            res = {"returns": inj["n"], "received": len(rows), "rate": sustained_rate([t for t, _ in rows]),
                   "injection_rate": inj["rate"], "cpu": cpu}
            out[mode] = res
            say(f"  -> {len(rows)}/{inj['n']} ret events seen, {res['rate'] or 0:.0f}/s sustained "
                f"(injectors offered {inj['rate']:.0f}/s); cpu {cpu}")
        # Bus latency at the latency runs' rate: the floor for anything that reads the bus.
        n = int(args.rate * args.latency_seconds)
        jobs = ctx.jobs("bus", n)
        wait_for_quiet_machine(ctx, "ceiling_bus_latency")
        say(f"ceiling/bus latency: {n} returns at {args.rate:.0f}/s to a subscriber that does nothing")
        meter = CpuMeter(ctx).start()
        inj = ctx.pool.inject(jobs, "event", new=True, rate=args.rate, timeout=120 + args.latency_seconds * 3)
        rows = _subscriber_rows(parent)
        lat = [t - ts for t, stamp in rows if (ts := stamp_to_ts(stamp)) is not None]
        out["latency"] = {"offered_rate": inj["rate"], "received": len(rows), "latency": ms_summary(lat),
                          "cpu": meter.stop()}
        say(f"  -> offered {inj['rate']:.0f}/s, bus latency {out['latency']['latency']}")
        out["cutoffs_logged"] = master.log_count(CUTOFF_LINE)
        lost = {m: out[m]["returns"] - out[m]["received"] for m in ("store_job", "event")}
        if out["cutoffs_logged"]:
            ctx.note(f"bus ceiling: the publisher cut off {out['cutoffs_logged']} slow subscriber(s) (the log does "
                     f"not say which; the master's own EventMonitor is one); the counting subscriber missed "
                     f"{lost} ret events")
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


def _subscriber_rows(conn, settle=0.5):
    time.sleep(settle)
    conn.send("times")
    if not conn.poll(30):
        raise RuntimeError("bus subscriber did not answer")
    return conn.recv()


def run_throughput(ctx, mode, n, key):
    args = ctx.args
    prefix = "tp" if mode == "event" else "sj"
    jobs = ctx.jobs(prefix, n)
    write_records(ctx, jobs, time.time(), 600)
    if mode == "store_job":
        ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
    wait_quiet(ctx, 30)  # the previous scenario's backlog first
    wait_for_quiet_machine(ctx, key)
    say(f"engine/throughput ({mode}): up to {n} returns or {args.tput_seconds:.0f} s, closed loop "
        f"(window {args.window}), {args.procs} injectors")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    if mode == "event":
        start_profile(ctx, 10, "tput_event")
    inj = ctx.pool.inject(jobs, mode, new=True, window=args.window, counter="receiver", timeout=120 + n / 50,
                          seconds=args.tput_seconds)
    n = inj["n"]
    got, _ = ctx.receiver.wait_for(prefix, "COMMAND_EXECUTED", n, timeout=60, stall=10)
    cpu = meter.stop()
    finish_profile(ctx)
    rows, dups = deliveries(ctx, prefix)
    times = [r[0] for r in rows]
    res = {"mode": mode, "returns": n, "delivered": len(rows), "duplicates": dups,
           "rate": sustained_rate(times), "injection_rate": inj["rate"],
           "overall_rate": len(rows) / max(1e-9, (max(times) - inj["first"])) if times else None,
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu, "rss_mb": engine_rss_mb(ctx)}
    ctx.results["scenarios"][key] = res
    say(f"  -> delivered {len(rows)}/{n}, {res['rate'] or 0:.0f}/s sustained (injectors offered "
        f"{inj['rate']:.0f}/s), bus cut-offs {res['cutoffs']}; cpu {cpu}")


def run_latency(ctx, key, hole_share=0.0):
    args = ctx.args
    n = int(args.rate * args.latency_seconds)
    prefix = "lat" if not hole_share else "bh"
    jobs = ctx.jobs(prefix, n)
    hole_jobs = []
    if hole_share:
        k = int(n * hole_share)
        hole_jobs = ctx.jobs("hole", k)
        # interleave: every (1/share)-th job goes to the black hole
        merged, step = [], max(1, round(1 / hole_share))
        hi = 0
        for i, job in enumerate(jobs):
            merged.append(job)
            if i % step == step - 1 and hi < len(hole_jobs):
                merged.append(hole_jobs[hi])
                hi += 1
        jobs_all = merged + hole_jobs[hi:]
    else:
        jobs_all = jobs
    write_records(ctx, jobs_all, time.time(), 600, {"hole": ctx.receiver.hole_url})
    # The returns are in the master job cache, as store_job leaves them, so an
    # engine that the bus drops can catch up from there.
    ctx.pool.prep_jobcache(jobs_all, with_return=True, timeout=120 + len(jobs_all) / 50)
    wait_quiet(ctx, 30)  # the previous scenario's backlog first
    wait_for_quiet_machine(ctx, key)
    what = f", {len(hole_jobs)} to a receiver that never answers" if hole_jobs else ""
    say(f"engine/latency{'+hole' if hole_jobs else ''}: {len(jobs_all)} returns at {args.rate:.0f}/s "
        f"for {args.latency_seconds:.0f} s (event injection){what}")
    cut0 = ctx.master.log_count(CUTOFF_LINE)
    meter = CpuMeter(ctx).start()
    rate = args.rate * len(jobs_all) / max(1, n)
    inj = ctx.pool.inject(jobs_all, "event", new=True, rate=rate, timeout=120 + args.latency_seconds * 3)
    got, still = ctx.receiver.wait_for(prefix, "COMMAND_EXECUTED", n, timeout=90, stall=10)
    cpu = meter.stop()
    if still:
        ctx.note(f"{key}: the engine was still delivering when the 90 s wait ended")
    rows, dups = deliveries(ctx, prefix)
    lat = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None]
    res = {"returns": n, "offered_rate": inj["rate"], "target_rate": args.rate, "delivered": len(rows),
           "lost": n - len(rows), "duplicates": dups, "latency": ms_summary(lat),
           "cutoffs": ctx.master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
    if hole_jobs:
        res["hole_returns"] = len(hole_jobs)
        res["hole_connections"] = ctx.receiver.stats()["hole_connections"]
    ctx.results["scenarios"][key] = res
    say(f"  -> offered {inj['rate']:.0f}/s, delivered {len(rows)}/{n}, latency {res['latency']}; cpu {cpu}")


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
    got, still = ctx.receiver.wait_for("burst", "COMMAND_EXECUTED", n, timeout=args.burst_wait, stall=60)
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


def wait_quiet(ctx, timeout):
    """Wait until the engine uses < 15 % of a core for 0.5 s (or ``timeout``)."""
    proc = ctx.master.engine_proc()
    if proc is None:
        return
    deadline = time.time() + timeout
    proc.cpu_percent(None)
    while time.time() < deadline:
        time.sleep(0.5)
        if proc.cpu_percent(None) < 15:
            return


def run_engine(ctx):
    args = ctx.args
    master = Master("engine", ctx.user, engine_config(ctx))
    ctx.master = master
    master.start(need_engine=True)
    try:
        ctx.open_pool(master)
        ready = probe_engine(ctx)
        if ready is None:
            raise RuntimeError(f"the engine never delivered a probe webhook within {PROBE_WAIT} s; see {master.log}")
        time.sleep(1)
        idle = engine_rss_mb(ctx)
        ctx.results["scenarios"]["engine_idle"] = {"rss_mb": idle, "first_probe_s": ready}
        say(f"engine up; idle RSS {idle:.1f} MB")
        run_throughput(ctx, "store_job", args.sj_returns, "engine_tput_store_job")
        run_throughput(ctx, "event", args.returns, "engine_tput_event")
        run_latency(ctx, "engine_latency")
        run_latency(ctx, "engine_latency_hole", hole_share=args.hole_share)
        # Last: a burst that overflows the bus leaves the engine catching up for a while.
        run_burst(ctx)
        ctx.results["scenarios"]["engine_phase"] = {"cutoffs_logged": master.log_count(CUTOFF_LINE)}
    finally:
        ctx.close_pool()
        master.stop()


def run_pending(ctx):
    args = ctx.args
    master = ctx.master = Master("engine", ctx.user, engine_config(ctx))
    due_n = int(min(args.due_rate * args.due_seconds, args.pending // 2))
    long_n = args.pending - due_n
    wipe_store(master)
    master.write()  # the injectors read this config: the store must be this master's
    ctx.open_pool(master)
    try:
        jobs = ctx.jobs("pend", long_n)
        say(f"pending: writing {long_n} records (deadline +600 s) into the store, master stopped")
        t = time.time()
        write_rate = write_records(ctx, jobs, time.time(), 600)
        say(f"  -> {long_n} records in {time.time() - t:.1f} s ({write_rate:.0f} records/s from {args.procs} procs)")
        ctx.close_pool()

        # Watch for the engine's start event (it carries the resumed count):
        # the watcher connects as soon as the bus socket exists.
        watch = {}
        master.clear_sockets()
        watcher = threading.Thread(target=_watch_start, args=(master, watch, 600), daemon=True)
        watcher.start()
        master.start(need_engine=True)
        ctx.open_pool(master)
        ready = probe_engine(ctx, timeout=max(PROBE_WAIT, args.pending / 500))
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

        # Records that fall due at due_rate/s, announced like a real publish.
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
        got, still = ctx.receiver.wait_for("due", "TIMEOUT", due_n, timeout=max(30, due_n / 100), stall=30)
        if still:
            ctx.note("pending: TIMEOUTs were still arriving when the wait ended")
        cpu = meter.stop()
        finish_profile(ctx)
        by_key = {(jid, dev): d for (jid, dev), d in zip(jobs, deadlines)}
        rows, dups = deliveries(ctx, "due", state="TIMEOUT")
        late = [r[0] - by_key[(r[1], r[2])] for r in rows if (r[1], r[2]) in by_key]
        early = sum(1 for x in late if x < 0)
        # Lateness along the window (deadline order): constant = a fixed delay, growing = falling behind.
        ordered = sorted((by_key[(r[1], r[2])], r[0] - by_key[(r[1], r[2])]) for r in rows if (r[1], r[2]) in by_key)
        tenth = max(1, len(ordered) // 10)
        along = [round(statistics.median(x for _, x in ordered[i:i + tenth]) * 1000, 1)
                 for i in range(0, len(ordered), tenth)][:10]
        res = {"pending": args.pending, "long_pending": long_n, "due": due_n, "due_rate": args.due_rate,
               "timeouts_received": len(rows), "missing": due_n - len(rows), "duplicates": dups, "early": early,
               "lateness": ms_summary(late), "lateness_p50_by_tenth_of_window_ms": along,
               "first_timeout_after_t0_s": (min(r[0] for r in rows) - t0) if rows else None,
               "write_rate": write_rate, "resumed": resumed,
               "resume_s": resume_s, "resume_measured_by": resume_how, "rss_idle_mb": ctx.results["scenarios"].get("engine_idle", {}).get("rss_mb"),
               "rss_loaded_mb": rss_loaded, "rss_pending_mb": rss_full, "rss_max_mb": rss_max, "cpu": cpu}
        idle = res["rss_idle_mb"]
        if idle and rss_full:
            res["bytes_per_callback"] = (rss_full - idle) * 2**20 / args.pending
            res["mb_per_100k"] = (rss_full - idle) * 100000 / args.pending
        ctx.results["scenarios"]["pending"] = res
        say(f"  -> TIMEOUTs {len(rows)}/{due_n}, lateness {res['lateness']}; median lateness along the "
            f"window (ms): {along}; cpu {cpu}")
        run_store_scale(ctx, jobs)
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


def _watch_start(master, out, timeout):
    import salt.config
    import salt.utils.event

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
        t = time.time()
        result = func()
        times.append(time.time() - t)
        if time.time() - started > cap:
            break
    return {"median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
            "calls": len(times)}, result


def run_store_scale(ctx, due_jobs):
    import salt.config
    import salt.runner

    args = ctx.args
    opts = salt.config.master_config(str(ctx.master.conf_path))
    runner = salt.runner.RunnerClient(opts)

    def call(fun, *a, **kw):
        return runner.cmd(fun, list(a), kwarg=kw or None, print_event=False, full_return=False)

    total = args.pending
    say(f"store: callbacks.get / callbacks.list through RunnerClient with {total}+ records present")
    sample = random.Random(1).sample(due_jobs, min(20, len(due_jobs)))
    out = {"records": total}
    gets = []
    for jid, dev in sample:
        t = time.time()
        rec = call("callbacks.get", dev, jid)
        gets.append(time.time() - t)
        if not isinstance(rec, dict) or rec.get("jid") != jid:
            out.setdefault("get_errors", []).append(str(rec)[:200])
    out["get"] = {"median_ms": round(statistics.median(gets) * 1000, 1), "max_ms": round(max(gets) * 1000, 1),
                  "calls": len(gets)}
    cases = [("list", {}), ("list_device", {"device_id": due_jobs[0][1]}),
             ("list_timeout_10", {"state": "TIMEOUT", "limit": 10}),
             ("list_executed_10_nomatch", {"state": "COMMAND_EXECUTED", "limit": 10})]
    for name, kw in cases:
        repeat = 1 if name.endswith("nomatch") else 5
        res, value = _timed(lambda kw=kw: call("callbacks.list", **kw), repeat, args.store_cap)
        res["returned"] = len(value) if isinstance(value, list) else str(value)[:200]
        out[name] = res
    # The store read alone, without the runner machinery.
    from salt_callbacks import factory

    store = factory.build_store(opts, factory.load_config(opts))
    res, _ = _timed(lambda: store.get(due_jobs[0][1], due_jobs[0][0]), 20, 30)
    out["store_get"] = res
    ctx.results["scenarios"]["store"] = out
    say(f"  -> {json.dumps(out)}")


def run_baseline(ctx):
    args = ctx.args
    root = BENCH / "reactor"
    hook = root / "reactor" / "hook.sls"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        "bench_webhook:\n"
        "  runner.http.query:\n"
        "    - args:\n"
        f"      - url: {ctx.receiver.url}\n"
        "      - method: POST\n"
        "      - header_dict: {Content-Type: application/json}\n"
        "      - data: {{ data|json|yaml_dquote }}\n",
        encoding="utf-8")
    master = ctx.master = Master("reactor", ctx.user, {"reactor": [{"salt/job/*/ret/*": [str(hook)]}]})
    master.start(need_reactor=True)
    try:
        ctx.open_pool(master)
        # Ready when one reaction reaches the receiver.
        started, ok = time.time(), False
        while time.time() - started < PROBE_WAIT:
            ctx.pool.inject(ctx.jobs("rprobe", 1), "event", new=False, timeout=30, lead=0)
            got, _ = ctx.receiver.wait_for("rprobe", "REACTOR", 1, timeout=3)
            if got:
                ok = True
                break
        if not ok:
            raise RuntimeError(f"the Reactor never posted within {PROBE_WAIT} s; see {master.log}")
        n = args.baseline_returns
        jobs = ctx.jobs("base", n)
        ctx.pool.prep_jobcache(jobs, with_return=False, timeout=120 + n / 50)
        wait_for_quiet_machine(ctx, "baseline_tput")
        say(f"baseline/throughput: {n} returns via store_job into the Reactor + http.query "
            f"(wait <= {args.baseline_wait:.0f} s)")
        cut0 = master.log_count(CUTOFF_LINE)
        meter = CpuMeter(ctx).start()
        inj = ctx.pool.inject(jobs, "store_job", new=True, timeout=120 + n / 50)
        got, still = ctx.receiver.wait_for("base", "REACTOR", n, timeout=args.baseline_wait, stall=15)
        cpu = meter.stop()
        rows, dups = deliveries(ctx, "base", state="REACTOR")
        lat = [r[0] - ts for r in rows if (ts := stamp_to_ts(r[4])) is not None]
        times = [r[0] for r in rows]
        res = {"returns": n, "delivered": len(rows), "still_delivering_at_cap": still, "duplicates": dups,
               "rate": sustained_rate(times), "injection_rate": inj["rate"], "latency": ms_summary(lat),
               "cutoffs": master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
        ctx.results["scenarios"]["baseline_tput"] = res
        say(f"  -> delivered {len(rows)}/{n}, {res['rate'] or 0:.1f}/s; cpu {cpu}")

        n = args.burst
        jobs = ctx.jobs("rburst", n)
        wait_for_quiet_machine(ctx, "baseline_burst")
        say(f"baseline/burst: {n} returns fired as fast as the injectors can (event injection)")
        cut0 = master.log_count(CUTOFF_LINE)
        meter = CpuMeter(ctx).start()
        inj = ctx.pool.inject(jobs, "event", new=False, timeout=120 + n / 100)
        got, still = ctx.receiver.wait_for("rburst", "REACTOR", n, timeout=args.baseline_burst_wait, stall=15)
        cpu = meter.stop()
        rows, dups = deliveries(ctx, "rburst", state="REACTOR")
        res = {"returns": n, "offered_rate": inj["rate"], "delivered": len(rows), "lost": n - len(rows),
               "still_delivering_at_cap": still, "cutoffs": master.log_count(CUTOFF_LINE) - cut0, "cpu": cpu}
        ctx.results["scenarios"]["baseline_burst"] = res
        say(f"  -> fired at {inj['rate']:.0f}/s, delivered {len(rows)}/{n}, bus cut-offs {res['cutoffs']}"
            f"{' (still delivering at the cap)' if still else ''}; cpu {cpu}")
    finally:
        ctx.close_pool()
        master.stop()
        ctx.master = None


# -- report ---------------------------------------------------------------------------


def fmt(value, digits=0, unit=""):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}{unit}"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "FAIL"


def build_report(ctx):
    s = ctx.results["scenarios"]
    args = ctx.args
    rows, lines = [], []
    http = s.get("ceiling_http", {})
    bus = s.get("ceiling_bus", {})
    http_rate = http.get("rate")

    def lower(*vals):
        vals = [v for v in vals if v]
        return min(vals) if vals else None

    base = s.get("baseline_tput", {})
    base_rate = base.get("rate")
    fractions = {}
    for mode, key in (("store_job", "engine_tput_store_job"), ("event", "engine_tput_event")):
        e = s.get(key, {})
        rate = e.get("rate")
        bus_rate = bus.get(mode, {}).get("rate")
        ceiling = lower(bus_rate, http_rate)
        frac = rate / ceiling if rate and ceiling else None
        fractions[mode] = (frac, bus_rate, http_rate)
        ok = None if rate is None else (rate >= 5000 or (frac is not None and frac >= 0.8))
        which = "bus" if ceiling and ceiling == bus_rate else "http"
        rows.append((f"webhooks/s sustained, {mode} injection", fmt(rate),
                     fmt(base_rate, 1) if mode == "store_job" else "-",
                     f"{fmt(ceiling)} ({which})" if ceiling else "-", ">=5000 or >=80% ceil", verdict(ok)))
    e_rate = s.get("engine_tput_event", {}).get("rate")
    ratio = e_rate / base_rate if e_rate and base_rate else None
    rows.append(("engine / Reactor baseline (x)", fmt(ratio, 1), "1.0", "-", ">=50x",
                 verdict(None if ratio is None else ratio >= 50)))

    lat = s.get("engine_latency", {})
    lsum = lat.get("latency", {})
    rate_ok = lat.get("offered_rate") and lat["offered_rate"] >= 0.95 * args.rate
    blat = base.get("latency", {})
    hl = bus.get("latency", {}).get("latency", {})  # the bus's own latency at the same rate
    label = f"@{fmt(lat.get('offered_rate'))}/s"
    rows.append((f"latency p50 ms {label}", fmt(lsum.get("p50_ms"), 2), fmt(blat.get("p50_ms"), 0),
                 fmt(hl.get("p50_ms"), 2), "-", ""))
    p99 = lsum.get("p99_ms")
    rows.append((f"latency p99 ms {label}", fmt(p99, 2), fmt(blat.get("p99_ms"), 0), fmt(hl.get("p99_ms"), 2),
                 f"<10 @{args.rate:.0f}/s",
                 verdict(None if p99 is None else (p99 < 10 and bool(rate_ok) and lat.get("lost", 1) == 0))))
    rows.append((f"latency max ms {label}", fmt(lsum.get("max_ms"), 2), fmt(blat.get("max_ms"), 0),
                 fmt(hl.get("max_ms"), 2), "-", ""))
    hole = s.get("engine_latency_hole", {})
    hp99 = hole.get("latency", {}).get("p99_ms")
    rows.append((f"healthy p99 ms, {int(args.hole_share * 100)}% to a dead receiver", fmt(hp99, 2), "-", "-",
                 "<10", verdict(None if hp99 is None else (hp99 < 10 and hole.get("lost", 1) == 0))))

    pend = s.get("pending", {})
    late = pend.get("lateness", {})
    tlabel = f"{fmt(pend.get('pending'))} pending, {fmt(pend.get('due_rate'))}/s due"
    rows.append((f"TIMEOUT lateness p50 ms ({tlabel})", fmt(late.get("p50_ms"), 1), "-", "-", "-", ""))
    lp99 = late.get("p99_ms")
    missing = pend.get("missing")
    lp99_text = fmt(lp99, 1) + (f" ({fmt(missing)} never came)" if missing else "")
    rows.append(("TIMEOUT lateness p99 ms", lp99_text, "-", "-", "<100",
                 verdict(None if lp99 is None else (lp99 < 100 and pend.get("missing", 1) == 0))))
    rows.append(("TIMEOUT lateness max ms", fmt(late.get("max_ms"), 1), "-", "-", "-", ""))
    rss = pend.get("rss_pending_mb")
    rows.append((f"engine RSS MB with {fmt(pend.get('pending'))} pending", fmt(rss, 1), "-", "-",
                 "<150 (100k)", verdict(None if rss is None or args.pending < 100000 else rss < 150)))
    rows.append(("engine RSS MB per 100k pending (over idle)", fmt(pend.get("mb_per_100k"), 1), "-", "-", "-", ""))
    rows.append(("bytes per pending callback", fmt(pend.get("bytes_per_callback")), "-", "-", "-", ""))
    rows.append((f"resume {fmt(pend.get('resumed'))} records at start (s)", fmt(pend.get("resume_s"), 1), "-",
                 "-", "-", ""))

    eb, bb = s.get("engine_burst", {}), s.get("baseline_burst", {})
    blost = bb.get("lost")
    blabel = fmt(blost) + (" (cap)" if bb.get("still_delivering_at_cap") else "") if blost is not None else "-"
    elabel = (fmt(eb.get("lost")) + (" (cap)" if eb.get("still_delivering_at_cap") else "")
              if eb.get("lost") is not None else "-")
    rows.append((f"burst of {fmt(args.burst)}: not delivered", elabel, blabel, "-", "0",
                 verdict(None if eb.get("lost") is None else eb["lost"] == 0)))

    st = s.get("store", {})
    for name, label in (("get", "callbacks.get"), ("list", "callbacks.list (limit 100)"),
                        ("list_device", "callbacks.list device_id="),
                        ("list_timeout_10", "callbacks.list state=TIMEOUT limit=10"),
                        ("list_executed_10_nomatch", "callbacks.list state=COMMAND_EXECUTED (none)")):
        v = st.get(name, {}).get("median_ms")
        rows.append((f"{label} ms, {fmt(st.get('records'))} records", fmt(v, 1), "-", "-", "<100 (bench bar)",
                     verdict(None if v is None else v < 100)))

    header = ("metric", "engine", "baseline", "ceiling", "target", "verdict")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    out = []
    sep = "-+-".join("-" * w for w in widths)
    out.append(" | ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    out.append(sep)
    for r in rows:
        out.append(" | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in
                              enumerate(zip(r, widths))))
    for mode, (frac, bus_rate, hr) in fractions.items():
        lines.append(f"engine / lower ceiling ({mode}): {fmt(frac * 100 if frac else None, 0)}%  "
                     f"(bus {fmt(bus_rate)}/s, http {fmt(hr)}/s)")
    sj = s.get("engine_tput_store_job", {}).get("rate")
    lines.append(f"engine / Reactor baseline: {fmt(ratio, 1)}x (event injection), "
                 f"{fmt(sj / base_rate if sj and base_rate else None, 1)}x (store_job injection); "
                 f"baseline {fmt(base_rate, 1)} webhooks/s")
    if base.get("latency", {}).get("n"):
        lines.append(f"baseline latency column: the Reactor's own throughput run ({fmt(base.get('returns'))} returns "
                     f"injected at once), not the engine's rate")
    for prof in ctx.results.get("profiles", {}).values():
        top = ", ".join(f"{name} {pc}%" for name, pc in prof["top_categories_pct"][:3])
        lines.append(f"engine loop during {prof['scenario']}: {prof['idle_in_epoll_pct']}% idle; {top}")
    bg = [(k, v["cpu"]["background"]) for k, v in s.items() if isinstance(v, dict) and "cpu" in v]
    if bg:
        worst = max(bg, key=lambda kv: kv[1])
        lines.append(f"background CPU (processes outside the bench): max {worst[1]:.2f} cores during {worst[0]}")
    ctx.results["table"] = [dict(zip(header, r)) for r in rows]
    ctx.results["summary_lines"] = lines
    return "\n".join(out + [""] + lines)


# -- main -----------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (about 3 minutes here: the masters' starts dominate)")
    p.add_argument("--returns", type=int, default=10000, help="returns for the event-injection throughput run")
    p.add_argument("--sj-returns", type=int, default=3000, help="returns for the store_job throughput runs")
    p.add_argument("--tput-seconds", type=float, default=10, help="cap on each closed-loop throughput run (s)")
    p.add_argument("--pending", type=int, default=100000, help="pending callbacks for the TIMEOUT/memory run")
    p.add_argument("--burst", type=int, default=15000, help="returns in one burst (engine and baseline)")
    p.add_argument("--procs", type=int, default=4, help="injector processes")
    p.add_argument("--rate", type=float, default=1000, help="returns/s for the latency runs")
    p.add_argument("--latency-seconds", type=float, default=5)
    p.add_argument("--hole-share", type=float, default=0.1, help="share of returns aimed at a dead receiver")
    p.add_argument("--due-rate", type=float, default=1000, help="deadlines falling due per second")
    p.add_argument("--due-seconds", type=float, default=5)
    p.add_argument("--announce-rate", type=float, default=2000, help="new events/s when announcing jobs ahead")
    p.add_argument("--baseline-returns", type=int, default=500)
    p.add_argument("--baseline-wait", type=float, default=60, help="cap on the baseline throughput run (s)")
    p.add_argument("--baseline-burst-wait", type=float, default=45, help="cap on the baseline burst wait (s)")
    p.add_argument("--burst-wait", type=float, default=90, help="cap on the engine burst wait (s)")
    p.add_argument("--window", type=int, default=3000, help="max outstanding returns in closed-loop runs")
    p.add_argument("--devices", type=int, default=1000, help="distinct device ids per scenario")
    p.add_argument("--http-requests", type=int, default=20000)
    p.add_argument("--http-concurrency", type=int, default=50)
    p.add_argument("--store-cap", type=float, default=60, help="cap (s) on repeated store calls")
    p.add_argument("--verify-every", type=int, default=50, help="receiver checks every Nth signature")
    p.add_argument("--callbacks", default="{}", help="JSON merged into the engine's callbacks: block")
    p.add_argument("--only", default="http,bus,engine,pending,baseline",
                   help="comma list of parts to run: http,bus,engine,pending,baseline")
    p.add_argument("--profile", default="",
                   help="comma list of tput,pending,burst: py-spy (--idle, raw) the engine's main thread during "
                        "the event throughput run / the TIMEOUT window / the burst recovery (needs py-spy in the venv)")
    p.add_argument("--quiet-wait", type=float, default=10,
                   help="before each scenario wait up to this many s for other processes to go quiet (0: no wait)")
    p.add_argument("--quiet-cores", type=float, default=0.3,
                   help="'quiet' = processes outside the bench use fewer cores than this")
    p.add_argument("--json", default=str(BENCH / "results.json"))
    args = p.parse_args(argv)
    if args.quick:
        defaults = {"returns": 1000, "sj_returns": 200, "pending": 2000, "burst": 1000, "rate": 300,
                    "latency_seconds": 2, "due_rate": 300, "due_seconds": 2, "baseline_returns": 30,
                    "baseline_wait": 10, "baseline_burst_wait": 5, "burst_wait": 20, "http_requests": 2000,
                    "store_cap": 5, "procs": 2, "quiet_wait": 0, "tput_seconds": 3}
        for key, value in defaults.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    args.callbacks_overrides = json.loads(args.callbacks)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    args.profile = {x.strip() for x in args.profile.split(",") if x.strip()}
    return args


def code_state():
    """Which engine was measured: the commit, local changes, and a hash of the package."""
    import hashlib

    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    digest = hashlib.sha256()
    for path in sorted((REPO / "salt_callbacks").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty": git("status", "--porcelain", "--", "salt_callbacks", "_engines", "_runners", "_returners"),
            "salt_callbacks_sha256": digest.hexdigest()[:16]}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.time()
    if BENCH.exists():
        shutil.rmtree(BENCH)
    BENCH.mkdir(parents=True)
    ctx = Ctx(args)
    ctx.results["config"] = {k: v for k, v in vars(args).items() if k not in ("only", "profile")}
    ctx.results["config"]["only"] = sorted(args.only)
    ctx.results["config"]["profile"] = sorted(args.profile)
    ctx.results["code"] = code_state()
    ctx.results["machine"] = {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                              "python": sys.version.split()[0]}
    failed = None
    try:
        ctx.receiver = Receiver(ctx.secret, args.verify_every)
        say(f"receiver on {ctx.receiver.url}, dead receiver on {ctx.receiver.hole_url}")
        if "http" in args.only:
            run_http_ceiling(ctx)
        if "bus" in args.only:
            run_bus_ceiling(ctx)
        if "engine" in args.only:
            run_engine(ctx)
        if "pending" in args.only:
            run_pending(ctx)
        if "baseline" in args.only:
            run_baseline(ctx)
        ctx.results["receiver"] = ctx.receiver.stats()
        ctx.results["receiver"].pop("counts", None)
        if ctx.results["receiver"].get("bad_signature"):
            ctx.note(f"{ctx.results['receiver']['bad_signature']} sampled webhook signature(s) did not verify")
    except KeyboardInterrupt:
        failed = "interrupted"
    except Exception as exc:  # noqa: BLE001 - report what we have
        failed = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if ctx.master is not None:
            ctx.master.stop()
        ctx.close_pool()
        if ctx.receiver is not None:
            ctx.receiver.stop()
    ctx.results["runtime_s"] = round(time.time() - started, 1)
    ctx.results["failed"] = failed
    table = build_report(ctx)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(ctx.results, indent=2, default=str) + "\n", encoding="utf-8")
    print(table)
    for note in ctx.results["notes"]:
        print(f"note: {note}")
    print(f"runtime {ctx.results['runtime_s']:.0f} s; results in {args.json}")
    if failed:
        print(f"BENCH FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
