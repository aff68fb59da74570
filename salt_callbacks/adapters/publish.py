"""Publishing jobs and firing one-off events from a runner, with the master's LocalClient."""

import salt.client
import salt.utils.event
import salt.utils.jid
import salt.utils.minions

from salt_callbacks import events


class SaltPublisher:
    """Resolves targets and publishes jobs with the master's LocalClient."""

    def __init__(self, opts, requests=None):
        """``requests()``: the ``keys.internal.RequestSigner`` (read when first
        needed); the engine acts on this runner's requests only when signed."""
        self.opts = opts
        self._requests = requests

    def targets(self, tgt, tgt_type):
        found = salt.utils.minions.CkMinions(self.opts).check_minions(tgt, tgt_type)
        return sorted(found.get("minions", []))

    def new_jid(self):
        return salt.utils.jid.gen_jid(self.opts)

    def publish(self, tgt, fun, arg, kwarg, tgt_type, returner, jid):
        with salt.client.get_local_client(mopts=self.opts) as client:
            return client.run_job(
                tgt,
                fun,
                arg=list(arg),
                kwarg=dict(kwarg) if kwarg else None,
                tgt_type=tgt_type,
                ret=returner or "",
                jid=jid or "",
                listen=False,
            )

    def announce(self, jid):
        """Tell the engine that ``jid``'s records changed after it was published."""
        self._request(events.registered(jid), {"jid": jid})

    def request_redelivery(self, jid, device_id, requested_by=None):
        """Ask the engine to send the latest payload of a record once more
        (``requested_by``: who asked, kept in the record's ``redeliveries``)."""
        self._request(events.redeliver(jid, device_id),
                      {"jid": jid, "device_id": device_id, "requested_by": requested_by})

    def _request(self, tag, data):
        if self._requests is not None:
            data = self._requests().sign(tag, data)
        fire_master_event(self.opts, tag, data)


def fire_master_event(opts, tag, data):
    """Fire one event on the master bus from a runner (synchronous)."""
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        bus.fire_event(dict(data), tag)


def accepted_minions(opts):
    """The ids of every accepted minion key: the HTTP API's devices."""
    found = salt.utils.minions.CkMinions(opts).check_minions("*", "glob")
    return sorted(found.get("minions", []))
