"""The engine's hot path alone, in this process: CPU per webhook without a master.

    python -m tools.bench.hotpath [--n 5000] [--window 1000] [--store salt_cache | --redis HOST:PORT [--ha]]
                                  [--switch-interval S] [--cprofile out.txt]

What it runs: the real ``CallbackEngine`` (``factory.build_engine``) with the
real store (``factory.build_store`` on a scratch ``cachedir``), the real
aiohttp transport and the harness's receiver in a process of its own. Each
job's ``new`` and ``ret`` events are packed beforehand as Salt packs them and
fed through ``SaltEvent.unpack`` into ``engine.on_event`` (what the bus
adapter does), at most ``--window`` returns not yet delivered. CPU is this
process's (``time.process_time``, every thread) from the first event to the
last ``delivered`` announcement, divided by webhooks delivered; the
receiver's CPU is not in it.

Not the bench's headline figure (that is the engine process's CPU in the
throughput run on a real master, ``make bench``): a way to see the engine's
own cost quickly, and to profile it (``--cprofile``) without a bus in the way.
"""

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import shutil
import sys
import tempfile
import time

from tests.support.receivers import ReceiverProcess


def _opts(cachedir, store):
    import salt.config  # pylint: disable=import-outside-toplevel

    opts = dict(salt.config.DEFAULT_MASTER_OPTS)
    opts.update({"cachedir": cachedir, "id": "hotpath", "sock_dir": cachedir, "pki_dir": cachedir})
    if store:
        opts.setdefault("callbacks", {})
    return opts


def _jobs(n):
    base = int(time.strftime("%Y%m%d%H%M%S")) * 1000000
    return [(str(base + i), f"hot-{i % 1000:05d}") for i in range(n)]


async def _run(args, receiver, opts):
    import salt.utils.event  # pylint: disable=import-outside-toplevel

    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel
    from salt_callbacks.model.records import Record  # pylint: disable=import-outside-toplevel
    from tools.bench.injectors import new_data, ret_load  # pylint: disable=import-outside-toplevel

    secret = receiver.secret
    opts["callbacks"] = {"secrets": {"default": secret}, "allow_networks": ["127.0.0.0/8"], "retry_delays": [1],
                         **({"store": args.store} if args.store else {})}
    if args.redis:
        host, _, port = args.redis.rpartition(":")
        opts["callbacks"].update(store="redis", redis={"host": host, "port": int(port)})
    config = factory.load_config(opts)
    if args.backend == "dict":
        from salt_callbacks.store import SaltCacheStore  # pylint: disable=import-outside-toplevel
        from tests.support.fakes import DictBackend  # pylint: disable=import-outside-toplevel

        store = SaltCacheStore(DictBackend())  # the engine without the store's I/O
    else:
        store = factory.build_store(opts, config)
    delivered = []
    # --ha: Redis claims too (coordination: auto on a redis store), as on a master of an HA set-up.
    # Here each job's new and ret come back to back, so most returns come before their job's read
    # and are claimed on the loop (the engine's slow path on several masters): a worst case.
    claims = factory.build_claims(opts, config) if args.redis and args.ha else None
    engine = factory.build_engine(config, store, notify=lambda tag, data: tag.endswith("/delivered")
                                  and delivered.append(time.time()), opts=opts, claims=claims)
    jobs = _jobs(args.n)
    url = receiver.url()
    # The records are written once the engine runs, as the runner writes them:
    # the engine learns of each job from its ``new`` event (written before it
    # started, they would be left asleep and read back one by one).
    should_exit = asyncio.Event()
    await engine.startup()
    now = time.time()
    for jid, dev in jobs:
        store.add_job(jid, [Record(jid=jid, device_id=dev, url=url, created=now, timeout=600,
                                   command={"returner": None, "command": "test.ping", "arg": []},
                                   signer="default", user="bench")], now)
    pack = salt.utils.event.SaltEvent.pack
    unpack = salt.utils.event.SaltEvent.unpack
    raw = [(pack(f"salt/job/{jid}/new", new_data(jid, dev)), pack(f"salt/job/{jid}/ret/{dev}", ret_load(jid, dev)))
           for jid, dev in jobs]
    loop_task = asyncio.get_running_loop().create_task(engine.main_loop(should_exit))
    profiler = cProfile.Profile() if args.cprofile else None
    # os.times(): user and kernel CPU apart (py-spy counts a preempted send() as on the CPU).
    times0, t0 = os.times(), time.time()
    if profiler:
        profiler.enable()
    fed, deadline = 0, time.time() + args.cap
    while len(delivered) < len(jobs) and time.time() < deadline:
        while fed < len(raw) and fed - len(delivered) < args.window:
            for message in raw[fed]:
                engine.on_event(*unpack(message))
            fed += 1
            if fed % 50 == 0:
                await asyncio.sleep(0)  # as the bus would: events arrive between other work
        await asyncio.sleep(0.001)
    if profiler:
        profiler.disable()
    times1, wall = os.times(), time.time() - t0
    user, system = times1.user - times0.user, times1.system - times0.system
    cpu = user + system
    should_exit.set()
    await loop_task
    await engine.shutdown()
    result = {"n": len(jobs), "delivered": len(delivered), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
              "cpu_us_per_webhook": round(cpu / max(1, len(delivered)) * 1e6, 1),
              "system_us_per_webhook": round(system / max(1, len(delivered)) * 1e6, 1),
              "rate": round(len(delivered) / wall, 1), "store_writes": engine.writer.writes}
    return result, profiler


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.bench.hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="webhooks")
    p.add_argument("--window", type=int, default=1000, help="returns fed and not yet delivered, at most")
    p.add_argument("--store", default="", help="callbacks: store (when the build knows the key)")
    p.add_argument("--backend", choices=("real", "dict"), default="real",
                   help="real: the store the config selects; dict: a salt_cache store in a dict (no I/O)")
    p.add_argument("--redis", default="", metavar="HOST:PORT",
                   help="the redis store on this server (callbacks: store: redis), instead of --store")
    p.add_argument("--ha", action="store_true", help="with --redis: Redis claims too, as with several masters")
    p.add_argument("--switch-interval", type=float, default=None, metavar="S",
                   help="the GIL's switch interval (sys.setswitchinterval); default: Python's")
    p.add_argument("--cap", type=float, default=120, help="seconds at most")
    p.add_argument("--cprofile", default="", help="write cProfile's top functions (by own time) here, "
                                                 "and the raw stats to <file>.prof")
    args = p.parse_args(argv)
    import secrets  # pylint: disable=import-outside-toplevel

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    logging.basicConfig(level=logging.WARNING)  # as the bench's masters log: INFO lines are not formatted
    scratch = tempfile.mkdtemp(prefix="hotpath-")
    secret = secrets.token_urlsafe(32)
    receiver = ReceiverProcess(secret, verify_every=50)
    receiver.secret = secret
    try:
        result, profiler = asyncio.run(_run(args, receiver, _opts(scratch, args.store)))
    finally:
        receiver.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(result)
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        with open(args.cprofile, "w", encoding="utf-8") as handle:
            handle.write(out.getvalue())
        profiler.dump_stats(args.cprofile + ".prof")  # all of it, for pstats or snakeviz
    return 0 if result["delivered"] == result["n"] else 1


if __name__ == "__main__":
    sys.exit(main())
