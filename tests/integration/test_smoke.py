import hashlib
import hmac

from tests.integration.conftest import SECRET


def test_command_executed_webhook_is_signed(salt_run, receiver, hook, minion):
    path, url = hook
    ret = salt_run.run("callbacks.execute", minion.id, "test.ping", f"callback_url={url}", "callback_timeout=30")
    assert ret.returncode == 0, ret
    jid = ret.data["jid"]
    (request,) = receiver.wait_for(path, 1, timeout=30)
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-request-signature"] == expected
    body = request.json
    assert body["state"] == "COMMAND_EXECUTED"
    assert body["jid"] == jid
