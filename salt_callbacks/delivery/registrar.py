"""Jobs published with callback metadata outside the runner (salt-api
``local_async``, ``salt --metadata``, LocalClient), registered from what the
master itself recorded.

The ``salt/job/<jid>/publish`` event is only a hint: a minion's ``event.send``
can put one on the master bus with any ``metadata`` and ``user`` it likes
(docs/security.md). So the records come from the job's load in the master job
cache (``published_job(jid)``, read in a thread: the user who published, the
command, the target's minions, the metadata), with the runner's validation and
address guard; a hint the job cache does not bear out registers nothing.

Salt 3006's master fires no ``publish`` event: only ``salt/job/<jid>/new``,
without the metadata, and before it writes the job's load. There
(``publish_events=False``) every job the store holds no records for is
looked up in the job cache (``on_unannounced``), its load read again a few
times while it is not written yet, and the returns the master stored before
the records existed are read back once they do.
"""

import asyncio
import logging

from salt_callbacks import events
from salt_callbacks.exceptions import CallbackError, StoreError

log = logging.getLogger(__name__)

#: Returns held while their job's load is read (a test.ping returns in ~0.1 s, the read may take longer).
HELD_RETURNS = 10000
#: Without publish events (Salt 3006): the pauses (seconds) before each further read of a
#: job's load while the job cache holds none yet (3006 writes it just after the ``new`` event).
UNANNOUNCED_PAUSES = (0.05, 0.2, 0.5, 1.0)


class MetadataRegistrar:
    def __init__(self, engine, register, published_job, publish_events=True):
        """``register(jid, publish, minions, stamp)`` validates and stores a
        job's records (``service.register_from_metadata``); ``published_job(jid)``
        is ``(publish, minions, stamp)`` as the master recorded the job, or None;
        ``publish_events``: the master fires ``salt/job/<jid>/publish`` (Salt 3007 and later)."""
        self._engine = engine
        self._register = register
        self._published_job = published_job
        self.publish_events = publish_events
        self._reading = {}  # jid -> its job-cache read, under way
        self._held = {}  # jid -> [(device_id, data)] that came during the read
        self._hinted = set()  # jids a publish event named while their unannounced read ran
        self._held_count = 0

    def on_publish(self, jid, data):
        """A ``publish`` event whose data names a ``callback_url``: look the job up."""
        metadata = data.get("metadata")
        if not isinstance(metadata, dict) or "callback_url" not in metadata:
            return
        if self._register is None or self._published_job is None:
            return
        if jid in self._reading:
            self._hinted.add(jid)  # a read is under way: its outcome is this event's, and logged as such
            return
        if self._engine.store.job(jid) is not None:
            return  # the runner registered it already
        self._reading[jid] = asyncio.get_running_loop().create_task(self._read(jid))

    def on_unannounced(self, jid, returns=()):
        """A job the store holds no records for, on a master that fires no
        ``publish`` event (Salt 3006): look its load up in the job cache.
        ``returns``: ``[(device_id, data)]`` that waited for the store read."""
        if self.publish_events or self._register is None or self._published_job is None:
            return
        if jid not in self._reading:
            self._reading[jid] = asyncio.get_running_loop().create_task(self._read(jid, UNANNOUNCED_PAUSES))
        for device_id, data in returns:
            self.holds(jid, device_id, data)

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

    async def _read(self, jid, pauses=None):
        """``pauses``: None for a ``publish`` event's hint; else the unannounced
        lookup's pauses before each further read while there is no load yet."""
        loop = asyncio.get_running_loop()
        job, failure = None, None
        try:
            for pause in (0.0, *(pauses or ())):
                if pause:
                    await asyncio.sleep(pause)
                try:
                    job, failure = await loop.run_in_executor(None, self._published_job, jid), None
                except Exception as exc:  # boundary: a job cache failure must not end the engine
                    failure = exc  # 3006 may be writing the job (its load, then .minions.p): read again
                if job is not None:
                    break
        finally:
            self._reading.pop(jid, None)
        if failure is not None:
            log.error("callbacks: could not read job %s from the master job cache", jid, exc_info=failure)
        if jid in self._hinted:
            self._hinted.discard(jid)
            pauses = None if job is None or not job[0].get("metadata") else pauses  # log as for the event
        records = None
        if job is None:
            if pauses is None:
                log.warning("callbacks: ignoring a publish event for job %s: the master job cache holds no job the "
                            "master published under that jid (an event a minion fired?)", jid)
        else:
            def record():
                nonlocal records
                records = self._record(jid, *job, announced=pauses is None)

            self._engine._guarded(events.job_publish(jid), record)  # pylint: disable=protected-access
        held = self._release(jid)
        if records and pauses is not None:
            # Without a publish event the records came after the returns began: a
            # return that reached the engine before them is in the job cache.
            held += await self._stored_returns(jid)
        for device_id, data in held:  # now the records are tracked (or there are none)
            self._engine._guarded(events.job_return(jid, device_id),  # pylint: disable=protected-access
                                  lambda d=device_id, r=data: self._engine.accept_return(jid, d, r))

    async def _stored_returns(self, jid):
        recover = self._engine.recover
        if recover is None:
            return []
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, recover, jid)
        except Exception:  # boundary: a job cache failure must not end the engine
            log.error("callbacks: could not read the returns of job %s from the master job cache", jid, exc_info=True)
            return []
        return list(found.items())

    def _record(self, jid, publish, minions, stamp, announced=True):
        """The job's records, registered and tracked; None when there are none to register."""
        engine = self._engine
        metadata = publish.get("metadata")
        if not isinstance(metadata, dict) or "callback_url" not in metadata:
            if announced:
                log.warning("callbacks: ignoring a publish event for job %s: the job the master published has no "
                            "callback metadata (an event a minion fired?)", jid)
            return None
        if engine.store.job(jid) is not None:
            return None  # registered meanwhile
        try:
            records = self._register(jid, publish, minions, stamp)
        except StoreError:
            raise  # held and replayed by the engine
        except CallbackError as exc:
            log.error("callbacks: job %s has invalid callback metadata: %s", jid, exc)
            engine.notify(events.invalid(jid), {"jid": jid, "error": str(exc)})
            return None
        engine.jobs.has_records(jid)
        for record in records:
            engine.track(record)
        log.info("callbacks: job %s registered from its metadata for %d minion(s)", jid, len(records))
        return records
