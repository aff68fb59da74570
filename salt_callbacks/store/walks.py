"""What a store without indexes does for recovery, counts and state filters: walk its records.

``SaltCacheStore`` and ``RedisStore`` have no index of unfinished records or
of public states, so these read every job's records (the cost of a recovery).
The embedded store answers the same questions from its indexes.
"""


def unfinished_jobs(store):
    """``[(jid, [unfinished records])]``, oldest job first."""
    found = []
    for jid in store.jids():
        records = [r for r in store.records_of_job(jid) if not r.finished]
        if records:
            found.append((jid, records))
    return found


def count_unfinished(store, user=None):
    """Records not finished yet (of ``user``, or everyone's): a full walk."""
    return sum(1 for _, records in unfinished_jobs(store) for r in records if user is None or r.user == user)


def in_state(state, predicate):
    """``predicate`` narrowed to records whose public state is ``state`` (None: unchanged)."""
    if state is None:
        return predicate

    def keep(record):
        return record.public_state() == state and (predicate is None or predicate(record))

    return keep


def remove_jobs(store, jobs):
    """``remove_job`` for each ``(jid, devices)``."""
    for jid, devices in jobs:
        store.remove_job(jid, devices)
