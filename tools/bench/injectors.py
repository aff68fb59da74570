"""Injector processes: they put job announcements and returns on a master's
bus through Salt's own APIs, write callback records into the store, and
prepare the master job cache, as many processes as ``--procs``.

Two ways to inject a return (both put the same event on the same bus; see
the package docstring): ``store_job`` (what an MWorker does) and ``event``
(the ret event only, through Salt's async publish path).
"""

import asyncio
import datetime
import time
import traceback

from tools.bench import BENCH, SPAWN

WORKER_START_WAIT = 90


class JidSource:
    """Unique 20-digit jids of gen_jid's form (local time, microseconds), increasing."""

    def __init__(self):
        self.last = datetime.datetime.now()

    def take(self, n):
        start = max(datetime.datetime.now(), self.last + datetime.timedelta(microseconds=1))
        self.last = start + datetime.timedelta(microseconds=n)
        return [(start + datetime.timedelta(microseconds=i)).strftime("%Y%m%d%H%M%S%f") for i in range(n)]


def ret_load(jid, dev):
    return {"id": dev, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0,
            "success": True, "cmd": "_return",
            "_stamp": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def new_data(jid, dev):
    return {"jid": jid, "tgt_type": "glob", "tgt": dev, "user": "root", "fun": "test.ping", "arg": [],
            "minions": [dev], "missing": []}


class Worker:
    """One injector process's Salt objects, made on first use."""

    def __init__(self, conf_path, index, injected, counters):
        import salt.config  # pylint: disable=import-outside-toplevel

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
            import salt.minion  # pylint: disable=import-outside-toplevel

            self._mminion = salt.minion.MasterMinion(self.opts, states=False, rend=False)
        return self._mminion

    def event(self):
        if self._event is None:
            import salt.utils.event  # pylint: disable=import-outside-toplevel

            self._event = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=False)
        return self._event

    def store(self):
        if self._store is None:
            from salt_callbacks import factory  # pylint: disable=import-outside-toplevel

            self._store = factory.build_store(self.opts, factory.load_config(self.opts))
        return self._store

    def aloop(self):
        if self._loop is None:
            import salt.utils.event  # pylint: disable=import-outside-toplevel

            self._loop = asyncio.new_event_loop()
            aopts = dict(self.opts)
            aopts["master_async_mworker"] = True  # Salt's async publish path: no thread per event
            self._aevent = salt.utils.event.get_master_event(aopts, aopts["sock_dir"], listen=False,
                                                             io_loop=self._loop)
        return self._loop

    # commands
    def write_records(self, jobs, url_by_prefix, finished=False):
        """``finished``: records whose COMMAND_EXECUTED was delivered (what a
        retention sweep removes), else waiting ones."""
        from salt_callbacks.model.records import Delivery, Phase, Record, Status  # pylint: disable=import-outside-toplevel

        store = self.store()
        started = time.time()
        for jid, dev, created, timeout in jobs:
            url = url_by_prefix[dev.split("-", 1)[0]]
            record = Record(jid=jid, device_id=dev, url=url, created=created, timeout=timeout,
                            command={"returner": None, "command": "test.ping", "arg": []},
                            signer="default", user="bench")
            if finished:
                record.phase = Phase.EXECUTED
                record.deliveries.append(Delivery(state="COMMAND_EXECUTED", delivery_id=f"msg_{jid}", body="{}",
                                                  created=created, status=Status.DELIVERED, attempts=1))
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
                returners[f"{cache}.returner"](ret_load(jid, dev))
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
        import salt.utils.job  # pylint: disable=import-outside-toplevel

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
                ev.fire_event(new_data(jid, dev), f"salt/job/{jid}/new")
            salt.utils.job.store_job(self.opts, ret_load(jid, dev), event=ev, mminion=mm)
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
                await ev.fire_event_async(new_data(jid, dev), f"salt/job/{jid}/new")
            if ret:
                await ev.fire_event_async(ret_load(jid, dev), f"salt/job/{jid}/ret/{dev}")
            self.injected[self.index] += 1
            done += 1
        return {"n": done, "first": first, "last": time.time()}

    def soak(self, jobs, url, rate, start_at, stop_at):
        """At ``rate``/s until ``stop_at``, each job as in production: its record
        written (the runner), the job cache prepared and the return stored (the
        master), then ``new`` and ``ret`` on the bus. Returns how many were done:
        the first ``n`` of ``jobs``."""
        return self.aloop().run_until_complete(self._soak(jobs, url, rate, start_at, stop_at))

    async def _soak(self, jobs, url, rate, start_at, stop_at):
        from salt_callbacks.model.records import Record  # pylint: disable=import-outside-toplevel

        store, returners, ev = self.store(), self.mminion().returners, self._aevent
        cache = self.opts["master_job_cache"]
        while time.time() < start_at:
            await asyncio.sleep(0.001)
        first, done = time.time(), 0
        for i, (jid, dev) in enumerate(jobs):
            delay = start_at + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.time() >= stop_at:
                break
            now = time.time()
            store.add_job(jid, [Record(jid=jid, device_id=dev, url=url, created=now, timeout=600,
                                       command={"returner": None, "command": "test.ping", "arg": []},
                                       signer="default", user="bench")], now)
            returners[f"{cache}.prep_jid"](passed_jid=jid)
            returners[f"{cache}.save_load"](jid, {"jid": jid, "fun": "test.ping", "arg": [], "tgt": dev,
                                                  "tgt_type": "glob", "user": "root"}, minions=[dev])
            load = ret_load(jid, dev)
            returners[f"{cache}.returner"](load)
            await ev.fire_event_async(new_data(jid, dev), f"salt/job/{jid}/new")
            await ev.fire_event_async(dict(load), f"salt/job/{jid}/ret/{dev}")
            self.injected[self.index] += 1
            done += 1
        return {"n": done, "first": first, "last": time.time()}

    def close(self):
        for ev in (self._event, self._aevent):
            if ev is not None:
                try:
                    ev.destroy()
                except Exception:  # noqa: BLE001 - closing down; nothing to save
                    pass

    def hello(self):
        self.aloop().run_until_complete(self._aevent.fire_event_async({"hello": True}, "bench/hello"))
        return {}


def worker_main(conn, conf_path, index, injected, counters):
    try:
        worker = Worker(conf_path, index, injected, counters)
    except Exception:  # noqa: BLE001 - reported to the coordinator
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
    """``procs`` injector processes bound to one master's config.

    ``counters`` maps a name to a shared count of webhooks (or events) seen
    downstream, so a closed loop can keep at most ``window`` outstanding."""

    def __init__(self, conf_path, procs, counters):
        self.counters = counters
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
        self.send(cmd, per_worker)
        return self.collect(cmd, per_worker, timeout)

    def send(self, cmd, per_worker):
        """Start ``cmd`` on the workers without waiting (then ``collect``)."""
        for conn, kwargs in zip(self.conns, per_worker):
            conn.send((cmd, kwargs))

    def collect(self, cmd, per_worker, timeout):
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

    def write_records(self, jobs, url_by_prefix, timeout, finished=False):
        parts = self.split(jobs)
        started = time.time()
        self.run("write_records", [{"jobs": p, "url_by_prefix": url_by_prefix, "finished": finished}
                                   for p in parts], timeout)
        return len(jobs) / max(1e-9, time.time() - started)

    def prep_jobcache(self, jobs, with_return, timeout):
        self.run("prep_jobcache", [{"jobs": p, "with_return": with_return} for p in self.split(jobs)], timeout)

    def counters_value(self, name):
        return self.counters[name].value if name else 0

    def inject(self, jobs, mode, new=True, rate=None, window=None, counter=None, timeout=600, ret=True,
               lead=0.5, seconds=None):
        """Returns {"n", "first", "last", "rate"} over all workers."""
        return self.inject_finish(self.inject_start(jobs, mode, new, rate, window, counter, ret, lead, seconds),
                                  timeout)

    def inject_start(self, jobs, mode, new=True, rate=None, window=None, counter=None, ret=True, lead=0.5,
                     seconds=None):
        """``inject`` without waiting: pass what it returns to ``inject_finish``."""
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
        self.send("inject", per)
        return per

    def inject_finish(self, per, timeout):
        results = self.collect("inject", per, timeout)
        first = min(r["first"] for r in results)
        last = max(r["last"] for r in results)
        n = sum(r["n"] for r in results)
        return {"n": n, "first": first, "last": last, "rate": n / max(1e-9, last - first)}

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
