"""A real HTTP webhook receiver on 127.0.0.1 for tests: records every request
and answers from a per-path script of statuses."""

import dataclasses
import http.server
import json
import threading
import time


@dataclasses.dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float
    answered: int = 0

    @property
    def json(self):
        return json.loads(self.body)


class Receiver:
    """Script items are a status code, or a dict with ``status`` and any of
    ``delay`` (seconds before answering), ``headers``, ``drip`` (seconds
    between the bytes of a long body)."""

    def __init__(self):
        self.requests = []
        self._scripts = {}  # path -> list of statuses, the last one repeats
        self._lock = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    script = receiver._scripts.get(self.path, [200])
                    step = script.pop(0) if len(script) > 1 else script[0]
                    if isinstance(step, int):
                        step = {"status": step}
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time(),
                                 answered=step["status"])
                    )
                    receiver._lock.notify_all()
                time.sleep(step.get("delay", 0))
                body = b"ok" if not step.get("drip") else b"x" * 200
                self.send_response(step["status"])
                for name, value in step.get("headers", {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if step.get("drip"):
                        for byte in body:  # bounded: 200 bytes
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(step["drip"])
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up on us, as it should

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def url(self, path):
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def script(self, path, statuses):
        """Answer the next requests to ``path`` with ``statuses`` in turn."""
        with self._lock:
            self._scripts[path] = list(statuses)

    def at(self, path):
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path, count, timeout=30):
        """Wait until ``path`` has received ``count`` requests; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([r for r in self.requests if r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [r.json.get("state") for r in self.requests if r.path == path]
                    raise AssertionError(f"{path}: wanted {count} request(s) within {timeout} s, got {got}")
                self._lock.wait(left)
            return [r for r in self.requests if r.path == path]

    def wait_for_state(self, path, state, status, timeout=30):
        """Wait until ``path`` has received a ``state`` payload that was
        answered ``status`` (the receiver's script decides the answers)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                requests = [r for r in self.requests if r.path == path]
                if any(r.json.get("state") == state and r.answered == status for r in requests):
                    return requests
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: no {state} answered {status} within {timeout} s")
                self._lock.wait(left)

    def settle(self, path, seconds):
        """Wait ``seconds`` more and return everything ``path`` got (to prove nothing else comes)."""
        time.sleep(seconds)
        return self.at(path)
