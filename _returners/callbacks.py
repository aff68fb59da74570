"""
The callback job cache: the master-side store of callback records.

It serves the same store that runner and engine build (``factory.build_store``),
for anything that reaches callback records through Salt's returner loader
(``callbacks.store``, ``callbacks.get_record``). Records live in
``salt.cache`` (bank ``callbacks/``; the driver is ``callbacks:cache``, else
the master's ``cache``, localfs by default) and are removed
``callbacks:retention`` seconds after creation.

This is not a returner for minions: ``--return callbacks`` stores nothing.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "callbacks"

_STORE = None


def __virtual__():
    try:
        import salt_callbacks.factory  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        return False, f"salt-callbacks core package is not importable: {exc}"
    return __virtualname__


def store():
    """The ``CallbackStore`` for this master, built once per loader."""
    global _STORE  # pylint: disable=global-statement
    if _STORE is None:
        from salt_callbacks import factory  # pylint: disable=import-outside-toplevel

        _STORE = factory.build_store(__opts__, factory.load_config(__opts__))
    return _STORE


def get_record(device_id, jid):
    """One stored record as a dict (internal form, for debugging), or ``{}``."""
    record = store().get(device_id, jid)
    return record.to_dict() if record else {}


def returner(ret):
    """Minion returns are not stored here; the engine reads them off the bus."""
    log.warning(
        "the callbacks returner is the master's callback store, not a minion returner; "
        "return of job %s from %s not stored",
        ret.get("jid"),
        ret.get("id"),
    )
