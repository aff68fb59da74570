"""The webhook receiver: one aiohttp app on 127.0.0.1 for the tests, the demo and the bench.

It records every POST (any path) and answers from a per-path script of
statuses; given the secret it checks signatures as a real receiver would.
The same class runs two ways:

- ``Receiver``, in a thread of the caller (tests, the demo): ``with
  Receiver() as receiver:``, then ``receiver.url(path)``,
  ``receiver.wait_for(path, n)``... Requests are kept whole (``Received``).
- ``ReceiverProcess``, the same app in a process of its own (the bench: at
  thousands of webhooks per second it must not share a GIL with the
  coordinator). It keeps only a compact row per webhook and is read over
  HTTP (``GET /stats``, ``GET /dump?prefix=``); it also listens on a "black
  hole" port that accepts connections and never answers.

A path ``/every/<n>/<status>`` answers every n-th request ``status`` and the
rest 200, for as long as it runs. Script items are a status code, or a dict with ``status`` and any of
``delay`` (seconds before answering), ``headers``, ``drip`` (seconds between
the bytes of a 200-byte body). The last item of a script repeats.
"""

import asyncio
import dataclasses
import hashlib
import hmac
import json
import multiprocessing
import socket
import threading
import time
import urllib.request

from aiohttp import web

from tests.support.ports import free_ports
from tests.support.waits import HarnessError, WaitTimeout

#: The spec's (AutoPi's) signature header: hex HMAC-SHA256 of the raw body.
AUTOPI_HEADER = "X-Request-Signature"
START_WAIT = 30
STOP_WAIT = 10
SPAWN = multiprocessing.get_context("spawn")


@dataclasses.dataclass
class Received:
    path: str
    headers: dict  # names lowercased
    body: bytes
    at: float  # time.time() on arrival
    answered: int = 0
    verified: bool | None = None  # None: not checked (no secret given, or not sampled)
    problem: str | None = None  # why a check failed
    header_items: list = dataclasses.field(default_factory=list)  # [(name, value)] as sent

    @property
    def json(self):
        return json.loads(self.body)


def check_signatures(body, headers, secret, now=None):
    """Both schemes, as a receiver would: what is wrong, or None if both verify.

    ``X-Request-Signature`` exactly as the spec's sample computes it, and
    the Standard Webhooks headers through ``salt_callbacks.signing.verify``.
    """
    from salt_callbacks.exceptions import VerificationError  # pylint: disable=import-outside-toplevel
    from salt_callbacks.signing import verify  # pylint: disable=import-outside-toplevel

    lowered = {str(k).lower(): v for k, v in headers.items()}
    problems = []
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, lowered.get(AUTOPI_HEADER.lower(), "")):
        problems.append(f"{AUTOPI_HEADER} does not match")
    if "webhook-signature" not in lowered:
        problems.append("no webhook-signature header")
    else:
        try:
            verify(body, lowered, secret, now=time.time() if now is None else now)
        except VerificationError as exc:
            problems.append(f"webhook-signature: {exc}")
    return "; ".join(problems) or None


def summarise(body):
    """(jid, device, state, _stamp) of a webhook body: the engine's payload,
    or the raw event data the Reactor baseline posts (state ``REACTOR``)."""
    doc = json.loads(body)
    if "state" in doc and "device_id" in doc:
        response = doc.get("response")
        return doc["jid"], doc["device_id"], doc["state"], response["data"].get("_stamp") if response else None
    return doc.get("jid"), doc.get("id"), "REACTOR", doc.get("_stamp")


class Receiver:
    """The receiver app. ``secret``: check signatures of every
    ``verify_every``-th webhook; ``reject_unverified``: answer 401 when a
    check fails; ``keep_requests``: keep each request whole (else only a
    compact row per webhook, for the bench); ``counter``: a shared
    ``multiprocessing`` value bumped per webhook; ``ssl_context``: serve
    HTTPS with it; ``host``: the loopback address to listen on."""

    def __init__(self, secret=None, verify_every=1, reject_unverified=False, keep_requests=True, counter=None,
                 ssl_context=None, host="127.0.0.1"):
        self.ssl_context, self.host = ssl_context, host
        self.secret, self.verify_every, self.reject_unverified = secret, verify_every, reject_unverified
        self.keep_requests, self.counter = keep_requests, counter
        self.requests = []
        self.arrivals = {}  # device prefix -> [(arrival, jid, device, state, stamp)]
        self.counts = {}  # device prefix -> state -> n
        self.info = {"n": 0, "checked": 0, "bad_signature": 0, "unsigned": 0, "unparsed": 0, "hole_connections": 0}
        self._scripts = {}  # path -> list of steps, the last one repeats
        self._cycles = {}  # /every/<n>/<status> path -> requests seen
        self.in_flight = self.peak_in_flight = 0  # requests being answered now; most at once since reset_peak()
        self._changed = threading.Condition()
        self._loop = self._thread = self._runner = self._hole = None
        self.port = None

    # -- the app (runs on the receiver's own event loop) -----------------------

    def _next_step(self, path):
        script = self._scripts.get(path)
        if not script and path.startswith("/every/"):
            return self._every(path)
        if not script:
            return {"status": 200}
        step = script.pop(0) if len(script) > 1 else script[0]
        return {"status": step} if isinstance(step, int) else step

    def _every(self, path):
        """``/every/<n>/<status>``: every n-th request to the path is answered
        ``status``, the others 200 (the bench's soak: a receiver failing one in ten)."""
        try:
            _, _, n, status = path.split("/")[:4]
            n, status = int(n), int(status)
        except ValueError:
            return {"status": 200}
        seen = self._cycles[path] = self._cycles.get(path, 0) + 1
        return {"status": status if seen % n == 0 else 200}

    async def _hook(self, request):
        body = await request.read()
        now = time.time()
        verified = problem = None
        self.info["n"] += 1
        if self.secret is not None and self.info["n"] % self.verify_every == 0:
            if not any(name in request.headers for name in (AUTOPI_HEADER, "webhook-signature")):
                self.info["unsigned"] += 1  # the Reactor baseline's posts, say
                verified, problem = False, "no signature headers"
            else:
                self.info["checked"] += 1
                problem = check_signatures(body, request.headers, self.secret, now)
                verified = problem is None
                self.info["bad_signature"] += not verified
        try:
            jid, device, state, stamp = summarise(body)
        except (ValueError, TypeError, KeyError, AttributeError):
            self.info["unparsed"] += 1
            jid = device = state = stamp = None
        with self._changed:
            step = self._next_step(request.path)
            status = 401 if verified is False and self.reject_unverified else step["status"]
            if state is not None:
                prefix = str(device).split("-", 1)[0]
                self.arrivals.setdefault(prefix, []).append((now, jid, device, state, stamp, status))
                per = self.counts.setdefault(prefix, {})
                per[state] = per.get(state, 0) + 1
            if self.keep_requests:
                self.requests.append(Received(
                    request.path, {k.lower(): v for k, v in request.headers.items()}, body, now, status,
                    verified, problem, list(request.headers.items())))
            self._changed.notify_all()
        if self.counter is not None:
            self.counter.value += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request, status, step)
        finally:
            self.in_flight -= 1

    def reset_peak(self):
        self.peak_in_flight = self.in_flight

    @staticmethod
    async def _answer(request, status, step):
        if step.get("delay"):
            await asyncio.sleep(step["delay"])
        headers = step.get("headers", {})
        if not step.get("drip"):
            return web.Response(status=status, headers=headers, body=None if status in (204, 304) else b"ok")
        body = b"x" * 200
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        try:
            await response.prepare(request)
            for byte in body:  # bounded: 200 bytes
                await response.write(bytes([byte]))
                await asyncio.sleep(step["drip"])
            await response.write_eof()
        except ConnectionError:
            pass  # the sender gave up on us, as it should
        return response

    async def _stats(self, request):
        return web.json_response({"counts": self.counts, **self.info})

    async def _dump(self, request):
        return web.json_response(self.arrivals.get(request.query.get("prefix", ""), []))

    async def _hole_connection(self, reader, writer):
        self.info["hole_connections"] += 1
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _open(self, port=0, hole_port=None):
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/dump", self._dump)
        app.router.add_post("/{path:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=2048, ssl_context=self.ssl_context).start()
        if hole_port is not None:
            self._hole = await asyncio.start_server(self._hole_connection, "127.0.0.1", hole_port, backlog=2048)

    async def _close(self):
        if self._hole is not None:
            self._hole.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- in a thread (tests, demo) -----------------------------------------------

    def start(self):
        ready, failed = threading.Event(), []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._open())
            except Exception as exc:  # noqa: BLE001 - handed to start()
                failed.append(exc)
                return
            finally:
                ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._close())
            self._loop.close()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=run, daemon=True, name="webhook-receiver")
        self._thread.start()
        if not ready.wait(START_WAIT) or failed:
            raise HarnessError(f"the webhook receiver did not start: {failed or 'no answer'}")
        return self

    def stop(self):
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_WAIT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path="/hook", host=None):
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def script(self, path, statuses):
        """Answer the next requests to ``path`` with ``statuses`` in turn."""
        with self._changed:
            self._scripts[path] = list(statuses)

    def at(self, path):
        with self._changed:
            return [r for r in self.requests if r.path == path]

    def _wait(self, found, timeout, what):
        """Block until ``found()`` (called under the lock) is truthy; returns it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (result := found()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(what())
                self._changed.wait(left)
            return result

    def wait_for(self, path, count, timeout=30):
        """Wait until ``path`` has received ``count`` requests; returns them."""
        def found():
            got = [r for r in self.requests if r.path == path]
            return got if len(got) >= count else None
        return self._wait(found, timeout, lambda: (
            f"{path}: wanted {count} request(s) within {timeout} s, "
            f"got {[r.json.get('state') for r in self.requests if r.path == path]}"))

    def wait_for_state(self, path, state, status, timeout=30):
        """Wait until ``path`` has received a ``state`` payload that was
        answered ``status`` (the receiver's script decides the answers)."""
        def found():
            got = [r for r in self.requests if r.path == path]
            return got if any(r.json.get("state") == state and r.answered == status for r in got) else None
        return self._wait(found, timeout, lambda: f"{path}: no {state} answered {status} within {timeout} s")

    def wait_for_webhook(self, jid, state, timeout=30):
        """The first webhook (any path) for job ``jid`` in ``state``."""
        def found():
            return next((r for r in self.requests if r.json.get("jid") == jid and r.json.get("state") == state), None)
        return self._wait(found, timeout, lambda: (
            f"no {state} webhook for job {jid} within {timeout} s (got for this job: "
            f"{[r.json.get('state') for r in self.requests if r.json.get('jid') == jid] or 'nothing'})"))

    def settle(self, path, seconds):
        """Wait ``seconds`` more and return everything ``path`` got (to prove nothing else comes)."""
        time.sleep(seconds)
        return self.at(path)

    # -- in a process of its own (bench) -----------------------------------------

    def serve(self, port, hole_port, conn):
        """Run until killed; says ``ready`` on ``conn`` once both ports listen."""
        async def main():
            await self._open(port, hole_port)
            conn.send("ready")
            await asyncio.Event().wait()

        asyncio.run(main())


def _receiver_process_main(conn, port, hole_port, secret, verify_every, counter):
    Receiver(secret, verify_every, keep_requests=False, counter=counter).serve(port, hole_port, conn)


class ReceiverProcess:
    """``Receiver`` in a spawned process, and its black hole; read over HTTP."""

    def __init__(self, secret=None, verify_every=50):
        self.port, self.hole_port = free_ports(2)
        self.counter = SPAWN.RawValue("q", 0)
        parent, child = SPAWN.Pipe()
        self.proc = SPAWN.Process(target=_receiver_process_main, daemon=True, name="webhook-receiver",
                                  args=(child, self.port, self.hole_port, secret, verify_every, self.counter))
        self.proc.start()
        if not parent.poll(START_WAIT) or parent.recv() != "ready":
            self.stop()
            raise HarnessError(f"the webhook receiver process did not start within {START_WAIT} s")
        self.hole_url = f"http://127.0.0.1:{self.hole_port}/hook"

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def _get(self, path, timeout=60):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
            return json.loads(resp.read())

    def stats(self):
        return self._get("/stats")

    def count(self, prefix, state):
        return self.stats()["counts"].get(prefix, {}).get(state, 0)

    def dump(self, prefix):
        """[(arrival, jid, device, state, stamp, status answered)] of every webhook to devices ``<prefix>-*``."""
        return self._get(f"/dump?prefix={prefix}")

    def wait_for_count(self, prefix, state, expected, timeout, stall=None):
        """Poll until ``expected`` arrivals, no progress for ``stall`` s, or
        ``timeout``. Returns (count, still_progressing_at_timeout)."""
        deadline = time.time() + timeout
        last, last_change = -1, time.time()
        while True:
            got = self.count(prefix, state)
            now = time.time()
            if got != last:
                last, last_change = got, now
            if got >= expected or (stall is not None and now - last_change >= stall):
                return got, False
            if now >= deadline:
                return got, True
            time.sleep(0.2)

    def stop(self):
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(STOP_WAIT)
