"""Which master-bus events reach the engine: the trust model in code (docs/security.md).

Anyone who can make a minion run ``event.send`` can put an event on the
master bus under almost any tag, with the data of their choosing. So:

* ``salt/job/<jid>/ret/<minion>`` counts only when it is shaped as the return
  the master's request server fires for an authenticated minion: ``cmd`` is
  ``_return`` (or absent, as in returns relayed by a syndic), ``id`` and
  ``jid`` are the minion and the jid its tag names, and it carries none of
  the fields of a forwarded minion event (``tag``, ``events``, ``pretag``;
  the forwarded ``event.send`` has ``cmd: _minion_event``). No I/O: this runs
  for every return.
* ``salt/callbacks/...`` requests (redeliver, registered) count only when
  signed by this master's runner with the master-local key
  (``keys.internal.RequestSigner``): a minion firing one does nothing.
* ``salt/job/<jid>/new`` and ``/publish`` pass, as hints only: the engine
  reads the store for ``new`` (which only the master writes) and the master
  job cache for ``publish`` (registrar.py); their fields are never believed.
"""

import logging

from salt_callbacks import events

log = logging.getLogger(__name__)

#: Fields of a minion event the master forwarded (salt/daemons/masterapi.py ``_minion_event``).
FORWARDED_FIELDS = ("tag", "events", "pretag")
#: Refusals logged: the first, then one in this many (a minion can fire them in a loop).
LOG_EVERY = 1000


class BusGate:
    def __init__(self, requests=None):
        """``requests``: a ``keys.internal.RequestSigner`` verifying the
        runner's requests; None refuses every request."""
        self._requests = requests
        self.refused = 0
        self._refused_by_kind = {}

    def admits(self, tag, data):
        """True for an event the engine may act on (or look at, for hints)."""
        parsed = events.parse(tag)
        if parsed is None:
            return False  # nothing the engine handles
        if parsed.kind == events.JOB_RETURN:
            ok = is_master_return(parsed, data)
            why = "not the master's return event for that minion"
        elif parsed.kind in (events.REDELIVER, events.REGISTERED):
            ok = self._requests is not None and self._requests.verify(tag, data)
            why = "not signed by this master's runner"
        else:
            return True
        if not ok:
            self._refuse(parsed.kind, tag, why)
        return ok

    def _refuse(self, kind, tag, why):
        self.refused += 1
        count = self._refused_by_kind[kind] = self._refused_by_kind.get(kind, 0) + 1
        if count == 1 or count % LOG_EVERY == 0:
            log.warning("callbacks: ignoring bus event %s: %s (a minion's event.send?); %d such refused so far",
                        tag[:200], why, count)


def is_master_return(parsed, data):
    """``data`` of a return tag as the master's request server fires it for the
    minion the tag names (see the module docstring)."""
    if not isinstance(data, dict):
        return False
    if data.get("id") != parsed.device_id or str(data.get("jid")) != parsed.jid:
        return False
    if data.get("cmd", "_return") != "_return":
        return False
    return not any(field in data for field in FORWARDED_FIELDS)
