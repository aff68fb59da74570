"""The harness's webhook receiver: what the tests, the demo and the bench rely on."""

import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from salt_callbacks.signing import signed_headers
from tests.support.receivers import Receiver, ReceiverProcess
from tests.support.waits import WaitTimeout

SECRET = "receiver-test-secret"


def body(jid="20260101000000000001", device="dev-1", state="COMMAND_EXECUTED"):
    return json.dumps({"jid": jid, "device_id": device, "state": state, "success": True}).encode()


def post(url, data, headers=None, timeout=10):
    request = urllib.request.Request(url, data=data, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signed(data, secret=SECRET):
    return signed_headers(data, [secret], "msg_test", time.time())


def test_a_script_answers_in_turn_and_its_last_status_repeats():
    with Receiver() as receiver:
        receiver.script("/a", [500, 503, 200])
        statuses = [post(receiver.url("/a"), body())[0] for _ in range(4)]
        assert statuses == [500, 503, 200, 200]
        assert [r.answered for r in receiver.wait_for("/a", 4)] == statuses
        assert post(receiver.url("/other"), body())[0] == 200  # unscripted paths answer 200


def test_requests_are_kept_whole_with_lowercased_headers():
    with Receiver() as receiver:
        post(receiver.url("/h"), body(), {"Content-Type": "application/json", "X-Custom": "yes"})
        (request,) = receiver.wait_for("/h", 1)
        assert request.headers["x-custom"] == "yes"
        assert ("X-Custom", "yes") in request.header_items
        assert request.json["device_id"] == "dev-1"
        assert request.verified is None  # no secret given: nothing checked


def test_a_delay_and_a_dripped_body_take_their_time():
    with Receiver() as receiver:
        receiver.script("/slow", [{"status": 200, "delay": 0.5}])
        receiver.script("/drip", [{"status": 200, "drip": 0.005}])
        started = time.monotonic()
        assert post(receiver.url("/slow"), body()) == (200, b"ok")
        assert time.monotonic() - started >= 0.5
        started = time.monotonic()
        status, content = post(receiver.url("/drip"), body())
        assert (status, content) == (200, b"x" * 200)
        assert time.monotonic() - started >= 200 * 0.005


def test_script_headers_are_sent():
    with Receiver() as receiver:
        receiver.script("/moved", [{"status": 302, "headers": {"Location": "http://127.0.0.1:1/target"}}])
        conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        try:
            conn.request("POST", "/moved", body=body())
            response = conn.getresponse()
            assert (response.status, response.getheader("Location")) == (302, "http://127.0.0.1:1/target")
        finally:
            conn.close()


def test_with_the_secret_both_signatures_are_checked_and_a_bad_one_is_refused():
    with Receiver(SECRET, reject_unverified=True) as receiver:
        data = body()
        assert post(receiver.url("/s"), data, signed(data))[0] == 200
        assert post(receiver.url("/s"), data, signed(data, "another-secret"))[0] == 401
        assert post(receiver.url("/s"), data)[0] == 401
        good, bad, unsigned = receiver.wait_for("/s", 3)
        assert (good.verified, good.problem) == (True, None)
        assert bad.verified is False and "X-Request-Signature does not match" in bad.problem
        assert "webhook-signature: no webhook-signature matched" in bad.problem
        assert unsigned.verified is False and unsigned.problem == "no signature headers"


def test_waits_are_bounded():
    with Receiver() as receiver:
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match="wanted 1 request"):
            receiver.wait_for("/never", 1, timeout=0.3)
        with pytest.raises(WaitTimeout, match="no TIMEOUT webhook for job 42"):
            receiver.wait_for_webhook("42", "TIMEOUT", timeout=0.3)
        assert time.monotonic() - started < 5


def test_an_every_path_fails_every_nth_request_for_as_long_as_it_runs():
    with Receiver(keep_requests=False) as receiver:
        statuses = [post(receiver.url("/every/3/503"), body(jid=str(n), device=f"sk-{n}"))[0] for n in range(7)]
        assert statuses == [200, 200, 503, 200, 200, 503, 200]
        assert [row[5] for row in receiver.arrivals["sk"]] == statuses  # each arrival says how it was answered


def test_webhooks_for_a_job_are_found_on_any_path():
    with Receiver() as receiver:
        post(receiver.url("/x"), body(jid="7", state="TIMEOUT"))
        assert receiver.wait_for_webhook("7", "TIMEOUT", timeout=5).path == "/x"


def test_in_its_own_process_it_counts_by_device_prefix_and_the_black_hole_never_answers():
    receiver = ReceiverProcess(SECRET, verify_every=1)
    try:
        for n in range(3):
            data = body(jid=str(n), device=f"tp0-{n:05d}")
            assert post(receiver.url(), data, signed(data))[0] == 200
        assert receiver.wait_for_count("tp0", "COMMAND_EXECUTED", 3, timeout=10) == (3, False)
        assert receiver.counter.value == 3
        assert [row[1] for row in receiver.dump("tp0")] == ["0", "1", "2"]
        stats = receiver.stats()
        assert (stats["checked"], stats["bad_signature"]) == (3, 0)

        with socket.create_connection(("127.0.0.1", receiver.hole_port), timeout=5) as conn:
            conn.settimeout(0.5)
            conn.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            with pytest.raises(socket.timeout):
                conn.recv(1)
        assert receiver.stats()["hole_connections"] == 1
    finally:
        receiver.stop()
    assert not receiver.proc.is_alive()
