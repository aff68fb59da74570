"""Every bus tag is built and parsed in one place, and the two agree."""

import pytest

from salt_callbacks import events

JID = "20240101000000000001"


@pytest.mark.parametrize(
    "tag, parsed",
    [
        (events.job_new(JID), events.Tag(events.JOB_NEW, JID)),
        (events.job_publish(JID), events.Tag(events.JOB_PUBLISH, JID)),
        (events.job_return(JID, "dev1"), events.Tag(events.JOB_RETURN, JID, "dev1")),
        (events.registered(JID), events.Tag(events.REGISTERED, JID)),
        (events.redeliver(JID, "dev1"), events.Tag(events.REDELIVER, JID, "dev1")),
    ],
)
def test_what_is_built_parses_back(tag, parsed):
    assert events.parse(tag) == parsed


def test_the_tags_are_salts_and_ours_as_documented():
    assert events.job_return(JID, "dev1") == f"salt/job/{JID}/ret/dev1"
    assert events.outcome(JID, "dev1", events.DELIVERED) == f"salt/callbacks/{JID}/dev1/delivered"
    assert events.invalid(JID) == f"salt/callbacks/{JID}/invalid"
    assert events.ENGINE_STARTED == "salt/callbacks/engine/start"


@pytest.mark.parametrize("tag", [
    f"salt/job/{JID}/ret/site/dev1",  # Salt's valid_id refuses '/' in a minion id: never a real return
    f"salt/job/{JID}/ret/..",
    f"salt/job/{JID}/ret/a..b",
    f"salt/job/{JID}/ret/dev\x00",
    f"salt/job/{JID}/ret/dev\n1",
    "salt/job/../minion2/20240101000000000001/ret/dev1",
    f"salt/job/{JID[:19]}/ret/dev1",
    f"salt/job/{JID}x/new",
    f"salt/job/{JID}_/publish",
    "salt/job/２０２４０１０１０００００００００００１/new",
    f"salt/callbacks/{JID}/../redeliver",
    f"salt/callbacks/{JID}/a\\b/redeliver",
    "salt/callbacks/../tokens/redeliver",
])
def test_a_tag_with_a_bad_jid_or_device_is_ignored(tag):
    assert events.parse(tag) is None


def test_a_unique_jid_is_salts_form_too():
    assert events.parse(f"salt/job/{JID}_4242/ret/dev1") == events.Tag(events.JOB_RETURN, f"{JID}_4242", "dev1")


@pytest.mark.parametrize("tag", [None, 7, "", "salt", "salt/job/1", "salt/job/1/other", "salt/auth",
                                 "salt/callbacks/1/dev1/delivered", "salt/callbacks/engine/start", "minion/x/y/z"])
def test_tags_the_engine_ignores_parse_to_none(tag):
    assert events.parse(tag) is None


def test_an_unknown_outcome_is_a_programming_error():
    with pytest.raises(ValueError):
        events.outcome(JID, "dev1", "vanished")
