"""Where one set of daemons lives (``Layout``): configs, root dirs, logs,
all under one folder, on 127.0.0.1 with free ports; and which ``salt-*``
tools run them (``SaltTools``). Part of the harness (harness.py)."""

import dataclasses
import json
import os
import pwd
import shutil
import sys
from pathlib import Path

from tests.support.ports import free_ports
from tests.support.waits import HarnessError

#: Linux caps a Unix socket path at 107 bytes; a deep checkout can pass it.
SOCKET_PATH_LIMIT = 107


@dataclasses.dataclass(frozen=True)
class SaltTools:
    """Which ``salt-*`` executables to run, and in what environment (``None``:
    this process's). The default is the virtualenv running this code."""

    bin: Path = Path(sys.executable).parent
    env: dict | None = None


@dataclasses.dataclass
class Layout:
    """Where one master (with its minion and salt-api, if any) lives: configs,
    root dirs, logs and the daemons' console output, all under ``root``."""

    root: Path
    minion_id: str = "minion"
    tools: SaltTools = SaltTools()
    publish_port: int = dataclasses.field(init=False)
    ret_port: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.publish_port, self.ret_port = free_ports(2)

    @classmethod
    def fresh(cls, root, **kwargs):
        """A layout in an empty ``root`` (wiped if it exists)."""
        if Path(root).exists():
            shutil.rmtree(root)
        Path(root).mkdir(parents=True)
        return cls(root, **kwargs)

    @property
    def master_conf(self):  # the -c directory of salt-master, salt, salt-run, salt-api
        return self.root / "master-conf"

    @property
    def minion_conf(self):
        return self.root / "minion-conf"

    # Salt prefixes root_dir to any path outside it, so each log lives under its root_dir.
    @property
    def master_log(self):
        return self.root / "master" / "log" / "master.log"

    @property
    def api_log(self):
        return self.root / "master" / "log" / "api.log"

    @property
    def minion_log(self):
        return self.root / "minion" / "log" / "minion.log"

    @property
    def master_sock_dir(self):
        return self.root / "master" / "sock"

    def out_file(self, name):
        """Where daemon ``name``'s stdout and stderr go."""
        return self.root / "logs" / f"{name}.out"

    def dirs(self, name):
        base = self.root / name
        return {"root_dir": str(base), "pki_dir": str(base / "pki"), "cachedir": str(base / "cache"),
                "sock_dir": str(base / "sock"), "pidfile": str(base / f"salt-{name}.pid")}

    def check_socket_paths(self):
        longest = str(self.root / "minion" / "sock" / "minion_event_0123456789_pull.ipc")
        if len(longest.encode()) > SOCKET_PATH_LIMIT:
            raise HarnessError(f"the path {self.root} is too long for Salt's Unix sockets ({longest!r} is "
                               f"{len(longest.encode())} bytes, the limit is {SOCKET_PATH_LIMIT}): use a shorter one")

    def master_config(self, **extra):
        """A master on 127.0.0.1 with this layout's ports and dirs; ``extra``
        is merged over it. Nothing sets *_dirs or module_dirs: Salt finds the
        extension through its ``salt.loader`` entry point (or file_roots)."""
        empty_roots = str(self.root / "master" / "empty_roots")
        return {
            **self.dirs("master"),
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "log_file": str(self.master_log),
            "key_logfile": str(self.master_log),
            "api_logfile": str(self.api_log),
            "api_pidfile": str(self.root / "master" / "salt-api.pid"),
            "log_level": "warning",
            "log_level_logfile": "info",  # ENGINE_STARTED is logged at info
            "file_roots": {"base": [empty_roots]},
            "pillar_roots": {"base": [empty_roots]},
            **extra,
        }

    def minion_config(self, **extra):
        return {
            **self.dirs("minion"),
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "id": self.minion_id,
            "master": "127.0.0.1",
            "master_port": self.ret_port,
            "log_file": str(self.minion_log),
            "log_level": "warning",
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "random_reauth_delay": 0,
            "enable_fqdns_grains": False,  # reverse lookups only slow the start down
            "file_roots": {"base": [str(self.root / "master" / "empty_roots")]},
            **extra,
        }

    def write_master(self, config):
        self.check_socket_paths()
        (self.root / "master" / "empty_roots").mkdir(parents=True, exist_ok=True)
        write_config(self.master_conf / "master", config)
        return config

    def write_configs(self, master_extra=None, minion_extra=None):
        """Master and minion configs; returns the master's."""
        write_config(self.minion_conf / "minion", self.minion_config(**(minion_extra or {})))
        return self.write_master(self.master_config(**(master_extra or {})))


def write_config(path, config):
    # JSON is valid YAML, so no YAML library is needed to write Salt configs.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)  # a master config may hold signing secrets
