"""Bad input: salt-run exits non-zero with a message naming the parameter,
prints no traceback, and nothing is stored or published."""

import pytest

from tests.integration.helpers import run_ok

pytestmark = pytest.mark.integration

URL = "http://127.0.0.1:9/never"


def record_count(salt_run):
    return len(run_ok(salt_run, "callbacks.list", "limit=100000"))


@pytest.mark.parametrize(
    "args, param",
    [
        (["callbacks.execute", "cb-minion-1", "test.ping", f"callback_url={URL}", "callback_timeout=0"], "callback_timeout"),
        (["callbacks.execute", "cb-minion-1", "test.ping", f"callback_url={URL}", "callback_timeout=601"], "callback_timeout"),
        (["callbacks.execute", "cb-minion-1", "test.ping", f"callback_url={URL}", "callback_timeout=abc"], "callback_timeout"),
        (["callbacks.execute", "cb-minion-1", "test.ping", f"callback_url={URL}", "callback_timeout=true"], "callback_timeout"),
        (["callbacks.execute", "cb-minion-1", "test.ping", f"callback_url={URL}", "callback_timeout=2.5"], "callback_timeout"),
        (["callbacks.execute", "cb-minion-1", "test.ping", "callback_url=ftp://example.com/x"], "callback_url"),
        (["callbacks.execute", "cb-minion-1", "test.ping", "callback_url=/relative/path"], "callback_url"),
        (["callbacks.execute", "cb-minion-1", "test.ping", "callback_url=http://"], "callback_url"),
        (["callbacks.execute", "cb-minion-1", "ping", f"callback_url={URL}"], "command"),
        (["callbacks.execute_raw", "cb-minion-1", "cmd.run 'unterminated", f"callback_url={URL}"], "command"),
        (["callbacks.execute_raw", "cb-minion-1", "", f"callback_url={URL}"], "command"),
        (["callbacks.execute", "no-such-minion-*", "test.ping", f"callback_url={URL}"], "device_id"),
    ],
    ids=[
        "timeout-0", "timeout-601", "timeout-abc", "timeout-true", "timeout-2.5",
        "url-ftp", "url-relative", "url-no-host", "command-no-module", "raw-unparsable",
        "raw-empty", "no-minion-matched",
    ],
)
def test_bad_input_is_refused_clearly_and_nothing_is_stored(salt_run, minion, args, param):
    before = record_count(salt_run)
    ret = salt_run.run(*args)
    assert ret.returncode != 0
    assert "Traceback" not in ret.stdout + ret.stderr
    assert param in ret.data["error"]
    assert record_count(salt_run) == before


def test_a_timeout_given_as_a_string_of_digits_is_accepted(salt_run, minion):
    # salt-run would type a bare 30 as an int; quote it so the runner sees "30".
    published = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={URL}", 'callback_timeout="30"')
    record = run_ok(salt_run, "callbacks.get", minion.id, published["jid"])
    assert record["timeout"] == 30


def test_get_of_a_missing_record_is_a_clear_not_found_error(salt_run, minion):
    ret = salt_run.run("callbacks.get", minion.id, "20000101000000000000")
    assert ret.returncode != 0
    assert "Traceback" not in ret.stdout + ret.stderr
    assert "no callback record" in ret.data["error"]
