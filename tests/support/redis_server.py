"""A real redis-server for tests: a free loopback port, a temp dir, never the system service.

Data is kept in an append-only file synced on every write, so ``restart()``
(and a ``kill()`` then ``start()``) loses nothing, as a production Redis with
``appendonly yes`` would not.
"""

import shutil
import socket
import subprocess
import time

from tests.support.ports import free_port


class RedisServer:
    def __init__(self, directory, port=None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server; .ci/run does it)")
        self.directory = str(directory)
        self.port = port or free_port()
        self.process = None
        self.log_path = f"{self.directory}/redis.log"
        self.extra_args = []  # e.g. TLS ports (later arguments win over the defaults)

    def start(self, timeout=20):
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", self.log_path, "--protected-mode", "no", *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")
            time.sleep(0.05)
        return self

    def ready(self):
        """Answers PING, or (TLS only, which a plain PING cannot reach) says it is ready in its log."""
        if "--tls-port" not in self.extra_args:
            return self.ping()
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "Ready to accept connections" in log.read()
        except OSError:
            return False

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """SIGKILL: the port closes at once; what was written is in the append-only file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self):
        self.stop()
        return self.start()

    def client(self):
        import redis  # pylint: disable=import-outside-toplevel

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
