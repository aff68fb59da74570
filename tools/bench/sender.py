"""The engine's announcements alone: CPU per event fired onto a real master's bus.

    python -m tools.bench.sender [--n 5000] [--rate 1000] [--repeat 3]

Starts a bench salt-master without the engine, then fires ``--n`` events at
``--rate`` per second from this process, once through each sender the engine
can use, alternating, ``--repeat`` times: ``EventSender`` (Salt's
``fire_event_async`` on a thread of its own, batched, the path 3006/3007 and
``ipc_mode: tcp`` use) and ``PullWriter`` (the frames written to the puller
socket on the loop, Salt 3008), and a sender that does nothing (the pacing
loop's own cost, in both figures). CPU is this process's (every thread) from
the first event until the sender has written everything, over the events.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

from tools.bench.masters import Master


async def _fire(sender, n, rate):
    sender.start()
    await asyncio.sleep(0.5)  # connected
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sender.fire(f"salt/callbacks/2026010100000{i:07d}/dev1/delivered", {"jid": "x", "state": "COMMAND_EXECUTED"})
    await asyncio.get_running_loop().run_in_executor(None, sender.close)  # everything written
    return (time.process_time() - cpu0) / n * 1e6


class NullSender:
    """The pacing loop alone: what both senders' figures include."""

    def start(self):
        pass

    def fire(self, tag, data):
        pass

    def close(self, timeout=5.0):
        pass


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.bench.sender", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    import salt.config  # pylint: disable=import-outside-toplevel

    from salt_callbacks.adapters import bus, ipc  # pylint: disable=import-outside-toplevel

    master = Master("sender", {"engines": []})
    master.start()
    try:
        opts = dict(salt.config.master_config(str(master.conf_path)))
        results = {"pacing alone": [], "EventSender": [], "PullWriter": []}
        path = bus.puller_path(opts)
        for _ in range(args.repeat):
            results["pacing alone"].append(asyncio.run(_fire(NullSender(), args.n, args.rate)))
            results["EventSender"].append(asyncio.run(_fire(bus.EventSender(opts), args.n, args.rate)))
            if path is not None:
                results["PullWriter"].append(asyncio.run(_fire(ipc.PullWriter(opts, path), args.n, args.rate)))
    finally:
        master.stop()
    out = {name: {"cpu_us_per_event_median": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
           for name, v in results.items() if v}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
