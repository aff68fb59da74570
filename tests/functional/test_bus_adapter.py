"""The bus adapter's subscriber (adapters/bus.py) with Salt's own event packing:
only the events the engine acts on are decoded and handed over."""

import asyncio

import salt.payload
import salt.utils.event
import salt.utils.stringutils

from salt_callbacks.adapters.bus import MasterBus
from salt_callbacks.delivery.engine import CallbackEngine


class FakeSaltEvent:
    def __init__(self):
        self.handler = None

    def set_event_handler(self, handler):
        self.handler = handler


def subscribed(on_event, wanted):
    bus = object.__new__(MasterBus)  # no master here: only the handler is under test
    bus._event = FakeSaltEvent()  # pylint: disable=protected-access
    bus.listen(on_event, wanted=wanted)
    return bus._event.handler  # pylint: disable=protected-access


def pack(tag, data):
    """An event as Salt puts it on the bus: ``SaltEvent.pack`` (3007, 3008), or
    what 3006's ``fire_event_async`` does inline (tag, ``TAGEND``, msgpack)."""
    if hasattr(salt.utils.event.SaltEvent, "pack"):
        return salt.utils.event.SaltEvent.pack(tag, data)
    return b"".join([salt.utils.stringutils.to_bytes(tag), salt.utils.stringutils.to_bytes(salt.utils.event.TAGEND),
                     salt.payload.dumps(data, use_bin_type=True)])


def test_only_events_the_engine_acts_on_are_decoded_and_handed_over():
    seen = []
    handle = subscribed(lambda tag, data: seen.append((tag, data)), CallbackEngine.wants)
    ret = {"id": "dev1", "jid": "20260101000000000001", "return": True, "retcode": 0}
    messages = [pack("salt/callbacks/20260101000000000001/dev1/delivered", {"state": "COMMAND_EXECUTED"}),
                pack("salt/job/20260101000000000001/ret/dev1", ret),
                pack("salt/auth", {"act": "accept"}),
                b"salt/job/20260101000000000002/ret/dev1\n\n\xc1 not msgpack"]

    async def feed():
        for raw in messages:
            await handle(raw)

    asyncio.run(feed())
    # The engine's own announcement and Salt's auth event are skipped before decoding;
    # a wanted event that does not decode is logged and skipped, not fatal.
    assert [tag for tag, _ in seen] == ["salt/job/20260101000000000001/ret/dev1"]
    assert seen[0][1]["return"] is True
