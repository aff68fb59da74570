"""A salt-master of the bench: the harness's layout and daemon, plus what the
bench reads from it (which process plays which role, for the CPU split; the
engine's process; the publisher's cut-off lines in the log).

No minion connects: returns are injected (see injectors.py), so the master
needs few workers, and logs at warning as in production (info would log
every delivery).
"""

import time

from tests.support.harness import Layout, clear_master_bus, find_child, child_processes, read_text, start_daemon, \
    stop_daemons, wait_for_master_bus
from tests.support.waits import wait_until
from tools.bench import BENCH, say

ENGINE_TITLE = "Engine(salt.loaded.ext.engines.callbacks)"
CUTOFF_LINE = "Publisher discarding slow subscriber"
MASTER_START_WAIT = 60
MASTER_STOP_WAIT = 20


class Master:
    def __init__(self, name, extra):
        self.name = name
        self.layout = Layout(BENCH / name)
        self.config = self.layout.master_config(worker_threads=2, log_level_logfile="warning", **extra)
        self.daemon = None

    @property
    def conf_path(self):
        return self.layout.master_conf / "master"

    @property
    def log(self):
        return self.layout.master_log

    @property
    def sock_dir(self):
        return self.layout.master_sock_dir

    @property
    def proc(self):
        return self.daemon.proc if self.daemon else None

    def write(self):
        self.layout.write_master(self.config)

    def clear_sockets(self):
        clear_master_bus(self.layout)

    def start(self, need_engine=False, need_reactor=False):
        """Start, and wait until the bus is up (and the engine's or the Reactor's process exists)."""
        self.write()
        self.clear_sockets()
        started = time.time()
        self.daemon = start_daemon(self.layout, "salt-master")
        wait_for_master_bus(self.layout, self.daemon, timeout=MASTER_START_WAIT)
        wait_until(lambda: (not need_engine or self.engine_proc()) and (not need_reactor or self.find("Reactor")),
                   max(1.0, MASTER_START_WAIT - (time.time() - started)),
                   f"salt-master {self.name}: no {'engine' if need_engine else 'Reactor'} process; see {self.log}",
                   interval=0.1, check=self.daemon.check)
        time.sleep(0.5)  # let the publisher accept connections
        say(f"salt-master {self.name} up (pid {self.daemon.pid}) in {time.time() - started:.1f} s")

    def find(self, title):
        return find_child(self.daemon.pid, title) if self.daemon else None

    def engine_proc(self):
        return self.find(ENGINE_TITLE)

    def proc_roles(self):
        """pid -> role name for this master's processes."""
        import psutil  # pylint: disable=import-outside-toplevel

        if self.daemon is None:
            return {}
        roles = {self.daemon.pid: "master"}
        for child in child_processes(self.daemon.pid):
            try:
                line, name = " ".join(child.cmdline()), child.name()
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
        return read_text(self.log).count(text)

    def stop(self):
        if self.daemon is None:
            return
        (stopped,) = stop_daemons(self.daemon, wait=MASTER_STOP_WAIT)
        if stopped.killed:
            say(f"salt-master {self.name} killed: still running {MASTER_STOP_WAIT} s after SIGTERM")
        say(f"salt-master {self.name} stopped in {stopped.seconds:.1f} s")
        self.daemon = None
