"""Jobs published with callback metadata outside the runner (salt-api
``local_async``, ``salt --metadata``, LocalClient), registered from what the
master itself recorded.

The ``salt/job/<jid>/publish`` event is only a hint: a minion's ``event.send``
can put one on the master bus with any ``metadata`` and ``user`` it likes
(docs/security.md). So the records come from the job's load in the master job
cache (``published_job(jid)``, read in a thread: the user who published, the
command, the target's minions, the metadata), with the runner's validation and
address guard; a hint the job cache does not bear out registers nothing.
"""

import asyncio
import logging

from salt_callbacks import events
from salt_callbacks.exceptions import CallbackError, StoreError

log = logging.getLogger(__name__)

#: Returns held while their job's load is read (a test.ping returns in ~0.1 s, the read may take longer).
HELD_RETURNS = 10000


class MetadataRegistrar:
    def __init__(self, engine, register, published_job):
        """``register(jid, publish, minions, stamp)`` validates and stores a
        job's records (``service.register_from_metadata``); ``published_job(jid)``
        is ``(publish, minions, stamp)`` as the master recorded the job, or None."""
        self._engine = engine
        self._register = register
        self._published_job = published_job
        self._reading = {}  # jid -> its job-cache read, under way
        self._held = {}  # jid -> [(device_id, data)] that came during the read
        self._held_count = 0

    def on_publish(self, jid, data):
        """A ``publish`` event whose data names a ``callback_url``: look the job up."""
        metadata = data.get("metadata")
        if not isinstance(metadata, dict) or "callback_url" not in metadata:
            return
        if self._register is None or self._published_job is None or jid in self._reading:
            return
        if self._engine.store.job(jid) is not None:
            return  # the runner registered it already
        self._reading[jid] = asyncio.get_running_loop().create_task(self._read(jid))

    def holds(self, jid, device_id, data):
        """Keep a return of a job whose load is being read; True if kept."""
        if jid not in self._reading or self._held_count >= HELD_RETURNS:
            return False
        self._held.setdefault(jid, []).append((device_id, data))
        self._held_count += 1
        return True

    def _release(self, jid):
        returns = self._held.pop(jid, [])
        self._held_count -= len(returns)
        return returns

    def tasks(self):
        return [task for task in self._reading.values() if not task.done()]

    async def _read(self, jid):
        try:
            job = await asyncio.get_running_loop().run_in_executor(None, self._published_job, jid)
        except Exception:  # boundary: a job cache failure must not end the engine
            log.error("callbacks: could not read job %s from the master job cache", jid, exc_info=True)
            job = None
        finally:
            self._reading.pop(jid, None)
        if job is None:
            log.warning("callbacks: ignoring a publish event for job %s: the master job cache holds no job the "
                        "master published under that jid (an event a minion fired?)", jid)
        else:
            self._engine._guarded(events.job_publish(jid), lambda: self._record(jid, *job))  # pylint: disable=protected-access
        for device_id, data in self._release(jid):  # now the records are tracked (or there are none)
            self._engine._guarded(events.job_return(jid, device_id),  # pylint: disable=protected-access
                                  lambda d=device_id, r=data: self._engine.accept_return(jid, d, r))

    def _record(self, jid, publish, minions, stamp):
        engine = self._engine
        metadata = publish.get("metadata")
        if not isinstance(metadata, dict) or "callback_url" not in metadata:
            log.warning("callbacks: ignoring a publish event for job %s: the job the master published has no "
                        "callback metadata (an event a minion fired?)", jid)
            return
        if engine.store.job(jid) is not None:
            return  # registered meanwhile
        try:
            records = self._register(jid, publish, minions, stamp)
        except StoreError:
            raise  # held and replayed by the engine
        except CallbackError as exc:
            log.error("callbacks: job %s has invalid callback metadata: %s", jid, exc)
            engine.notify(events.invalid(jid), {"jid": jid, "error": str(exc)})
            return
        engine.jobs.has_records(jid)
        for record in records:
            engine.track(record)
        log.info("callbacks: job %s registered from its metadata for %d minion(s)", jid, len(records))
