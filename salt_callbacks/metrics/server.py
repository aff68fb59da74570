"""``/metrics``, ``/healthz`` and ``/readyz`` on one port, from a thread.

A tiny ``http.server`` in a daemon thread, not on the engine's event loop:
when the loop stalls, ``/healthz`` still answers (503, heartbeat stale)
instead of hanging with it.
"""

import http.server
import json
import logging
import threading

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


class MetricsServer:
    def __init__(self, registry, health, host, port):
        self.registry = registry
        self.health = health
        self.host = host
        self.port = port
        self._server = None
        self._thread = None

    def start(self):
        """Listen and serve in a thread. Returns the bound port. Raises ``OSError`` if it cannot bind."""
        handler = _handler(self.registry, self.health)
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="callbacks-metrics", daemon=True)
        self._thread.start()
        log.info("callbacks metrics: serving /metrics, /healthz and /readyz on http://%s:%s", self.host, self.port)
        return self.port

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # the engine restarts on the same port


def _handler(registry, health):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "salt-callbacks-metrics"
        sys_version = ""

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(*health.alive())
            elif path == "/readyz":
                self._json(*health.ready())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _json(self, ok, body):
            self._send(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")

        def _send(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            log.debug("callbacks metrics: %s %s", self.address_string(), format % args)

    return Handler
