"""The core package imports without Salt: only ``adapters/``, ``factory`` and ``main`` may touch it."""

import json
import subprocess
import sys

#: Modules (and packages) allowed to import Salt, relative to ``salt_callbacks``.
SALT_SIDE = ("adapters", "factory", "main")

PROBE = """
import importlib, json, pkgutil, sys
import salt_callbacks
skip = tuple(sys.argv[1].split(",")) if sys.argv[1] else ()
names = []
for module in pkgutil.walk_packages(salt_callbacks.__path__, "salt_callbacks."):
    short = module.name[len("salt_callbacks."):]
    if any(short == s or short.startswith(s + ".") for s in skip):
        continue
    # The Salt module folders exist in a wheel only (engines, runners, ...); they are Salt's side too.
    if short.split(".")[0] in ("engines", "runners", "returners", "netapi"):
        continue
    names.append(short)
    importlib.import_module(module.name)
salt = sorted(k for k in sys.modules if k == "salt" or k.startswith("salt."))
print(json.dumps({"modules": sorted(names), "salt": salt}))
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
    found = probe(SALT_SIDE)

    # The probe really imported the core, every package of it, not an empty list.
    assert {
        "api.auth", "api.config", "api.http", "api.service",
        "config", "events", "exceptions", "loader", "redact", "signing",
        "delivery.dispatcher", "delivery.engine", "delivery.guard", "delivery.lookups", "delivery.outage",
        "delivery.scheduler", "delivery.sweeper", "delivery.transport", "delivery.writer",
        "ha.claims", "ha.coordinator", "ha.redis_coordinator",
        "keys.resolver", "keys.sealing",
        "model.records", "model.retry", "model.validation",
        "service", "service.callbacks", "service.registration", "service.requests",
        "store", "store.salt_cache",
        "webhook.payload", "webhook.signing",
    } <= set(found["modules"])
    assert not any(name.split(".")[0] in SALT_SIDE for name in found["modules"])
    assert found["salt"] == []


def test_the_probe_does_see_salt_when_an_adapter_is_imported():
    # Proves the check above can fail: the same probe, adapters included.
    found = probe(())

    assert "adapters.bus" in found["modules"]
    assert "salt" in found["salt"]
