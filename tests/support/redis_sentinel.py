"""A real Redis primary, a replica and three Sentinels on free loopback ports, for failover tests.

Debian's ``redis-sentinel`` is the redis-server binary under another name;
``redis-server <conf> --sentinel`` starts the same thing, so that is what
runs here (it works whichever name the package installed). Sentinels
rewrite their config file, so each gets its own in the temp dir.
"""

import shutil
import socket
import subprocess
import time

from tests.support.ports import free_ports
from tests.support.redis_server import RedisServer

SERVICE = "callbacks-primary"
#: Sentinel timings: a dead primary is noticed after DOWN_AFTER_MS, failed over soon after.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def ask(port, *words, timeout=1.0):
    """One RESP command over a plain socket; the raw answer (enough for PING and ROLE checks)."""
    command = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in map(str, words))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(command.encode())
            return conn.recv(4096).decode(errors="replace")
    except OSError:
        return ""


class SentinelSet:
    def __init__(self, directory):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (tools/system-deps.sh installs it)")
        self.directory = directory
        for name in ("primary", "replica"):
            (directory / name).mkdir(exist_ok=True)
        self.primary = RedisServer(directory / "primary")
        self.replica = RedisServer(directory / "replica")
        self.replica.extra_args = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.sentinel_ports = free_ports(3)
        self.sentinels = []  # Popen

    @property
    def addresses(self):
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self, timeout=30):
        for server in (self.primary, self.replica):
            server.start()
        for index, port in enumerate(self.sentinel_ports):
            conf = self.directory / f"sentinel-{index}.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", "protected-mode no", "daemonize no",
                f"dir {self.directory}", f"logfile {self.directory}/sentinel-{index}.log",
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1", "",
            ]), encoding="utf-8")
            self.sentinels.append(subprocess.Popen(  # pylint: disable=consider-using-with
                [shutil.which("redis-server"), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        # Ready when every Sentinel knows the primary and its replica, and the replica is in sync.
        while not all(self._sentinel_ready(port) for port in self.sentinel_ports) \
                or "master_link_status:up" not in ask(self.replica.port, "INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel set did not settle within {timeout} s; see {self.directory}")
            time.sleep(0.1)
        return self

    def _sentinel_ready(self, port):
        return f"{self.replica.port}" in ask(port, "SENTINEL", "REPLICAS", SERVICE)

    def primary_port(self):
        """The port the Sentinels name as the primary now (None if they do not answer)."""
        answer = ask(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        parts = [line for line in answer.split("\r\n") if line and not line.startswith(("*", "$"))]
        return int(parts[1]) if len(parts) == 2 else None

    def kill_primary(self):
        self.primary.kill()

    def wait_for_failover(self, timeout=30):
        """Until the Sentinels name the replica as primary and it says it is one."""
        deadline = time.monotonic() + timeout
        while not (self.primary_port() == self.replica.port and "role:master" in ask(self.replica.port, "INFO",
                                                                                     "replication")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover within {timeout} s; see the sentinel logs in {self.directory}")
            time.sleep(0.1)

    def stop(self):
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
        for process in self.sentinels:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.sentinels = []
        self.replica.stop()
        self.primary.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
