"""The two processes that stand in for the engine to measure the ceilings.

- ``subscriber_main``: subscribes to a master's bus with the API the engine
  uses (``get_master_event(listen=True)`` + ``set_event_handler``) and only
  counts ``salt/job/*/ret/*`` events (the bus ceiling).
- ``http_client_main``: a bare aiohttp client posting the same signed
  COMMAND_EXECUTED bodies the engine would (the HTTP ceiling).
"""

import asyncio
import datetime
import time

from tools.bench.stats import ms_summary


def subscriber_main(conn, conf_path, counter):
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.utils.event  # pylint: disable=import-outside-toplevel

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


def http_client_main(conn, url, secret, n, concurrency):
    import aiohttp  # pylint: disable=import-outside-toplevel

    from salt_callbacks.webhook.payload import encode_executed  # pylint: disable=import-outside-toplevel
    from salt_callbacks.signing import delivery_id, signed_headers  # pylint: disable=import-outside-toplevel

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
