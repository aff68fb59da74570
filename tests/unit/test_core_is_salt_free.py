"""The core package imports without Salt: only ``saltio`` and ``factory`` may touch it."""

import json
import subprocess
import sys

SALT_ADAPTERS = ("saltio", "factory")

PROBE = """
import importlib, json, pkgutil, sys
import salt_callbacks
skip = set(sys.argv[1].split(",")) if sys.argv[1] else set()
names = sorted(m.name for m in pkgutil.iter_modules(salt_callbacks.__path__) if m.name not in skip)
for name in names:
    importlib.import_module("salt_callbacks." + name)
salt = sorted(k for k in sys.modules if k == "salt" or k.startswith("salt."))
print(json.dumps({"modules": names, "salt": salt}))
"""


def probe(skip):
    # A fresh interpreter: this one already has Salt loaded by the pytest plugins.
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(skip)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_core_module_imports_without_loading_salt():
    found = probe(SALT_ADAPTERS)

    # The probe really imported the core, not an empty list.
    assert {
        "apiauth",
        "apiconfig",
        "apiservice",
        "httpapi",
        "sealing",
        "config",
        "coordination",
        "engine",
        "exceptions",
        "loader",
        "ownership",
        "payload",
        "records",
        "redact",
        "retry",
        "service",
        "signing",
        "store",
        "transport",
        "validation",
    } <= set(found["modules"])
    assert not set(SALT_ADAPTERS) & set(found["modules"])
    assert found["salt"] == []


def test_the_probe_does_see_salt_when_an_adapter_is_imported():
    # Proves the check above can fail: the same probe, adapters included.
    found = probe(())

    assert "saltio" in found["modules"]
    assert "salt" in found["salt"]
