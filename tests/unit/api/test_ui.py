"""The deliveries page's server side (``/ui/``) over a real aiohttp server on 127.0.0.1,
Salt replaced by the same fakes as the API's tests: sign-in and the session
cookie, CSRF, what each viewer sees, the timeline, Redeliver, the chart's
figures and the page's security headers. (The page in a browser:
tests/integration/test_ui.py.)"""

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from salt_callbacks.api.ui import routes as ui
from salt_callbacks.model.records import AttemptResult, isoformat
from salt_callbacks.model.retry import RetrySchedule

from tests.support.fakes import OK, make_record, run
from tests.unit.api.test_http import ApiRig

CREDENTIALS = {("alice", "pw", "auto"): "a1" * 32, ("bob", "pw", "auto"): "b0" * 32}
SECRET_URL = "https://user:hunter2@receiver.example.com/hook?token=abc"
ALICE_AUTO = "auto:alice"  # the records' creator (service.access): alice sees them in full


class UiRig(ApiRig):
    def __init__(self):
        super().__init__()
        self.api.service._login = lambda u, p, e: CREDENTIALS.get((u, p, e))  # pylint: disable=protected-access
        self.redeliveries = []
        self.publisher.request_redelivery = lambda jid, device, *who: self.redeliveries.append((jid, device))
        schedule = RetrySchedule.from_config(self.config)
        now = self.clock.now
        self.failed = self.attempted(make_record(1, "dev1", created=now - 120, url=SECRET_URL, creator=ALICE_AUTO), 500, schedule)
        self.delivered = self.attempted(make_record(2, "dev2", created=now - 60, creator=ALICE_AUTO), 200, schedule)
        self.waiting = make_record(3, "dev1", created=now - 30, creator=ALICE_AUTO)
        for record in (self.failed, self.delivered, self.waiting):
            self.store.add_job(record.jid, [record], record.created)

    def attempted(self, record, status, schedule):
        delivery = record.on_return(OK, record.created + 1)
        result = AttemptResult(status=status, excerpt="receiver says no" if status >= 300 else "ok",
                               signatures={"X-Request-Signature": "ab" * 32, "webhook-signature": "v1,c2ln"})
        record.record_attempt(delivery, record.created + 1.5, result, schedule, lambda: 0.5, "f1ng3rpr1nt0")
        if status >= 300:
            delivery.move("failed")
        return record

    def session(self, scenario):
        async def main():
            app = self.api.app()
            ui.install(app, self.api, eauth_backends=["auto"], clock=self.clock)
            async with TestClient(TestServer(app)) as client:
                return await scenario(client)

        return run(main())


async def sign_in(client, user="alice"):
    async with client.post("/ui/api/login", json={"username": user, "password": "pw", "eauth": "auto"}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["csrf"], response.headers.getall("Set-Cookie")


async def get(client, path):
    async with client.get(path) as response:
        return response.status, json.loads(await response.text())


@pytest.fixture
def rig():
    return UiRig()


def test_the_page_and_its_files_come_with_a_strict_content_security_policy(rig):
    async def scenario(client):
        found = {}
        for path in ("/ui/", "/ui/static/app.js", "/ui/static/app.css", "/ui/api/eauth"):
            async with client.get(path) as response:
                found[path] = (response.status, response.headers, await response.text())
        async with client.get("/ui/static/..%2fhttp.py") as response:
            found["bad"] = response.status
        async with client.get("/ui", allow_redirects=False) as response:
            found["bare"] = (response.status, response.headers.get("Location"))
        return found

    found = rig.session(scenario)
    status, headers, html = found["/ui/"]
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style, nothing from elsewhere.
    assert "<script>" not in html and "style=" not in html and "http" not in html.replace("http-equiv", "")
    for name in ('name="username"', 'name="password"', 'name="eauth"', ">Redeliver<"):
        assert name in html
    assert found["/ui/static/app.js"][1]["Content-Type"].startswith("text/javascript")
    assert found["/ui/static/app.js"][1]["Content-Security-Policy"] == csp
    assert json.loads(found["/ui/api/eauth"][2]) == {"backends": ["auto"]}
    assert found["bad"] == 404
    assert found["bare"] == (302, "/ui/")


def test_sign_in_sets_an_httponly_samesite_strict_cookie_and_gives_a_csrf_token(rig):
    async def scenario(client):
        csrf, cookies = await sign_in(client)
        session = await get(client, "/ui/api/session")
        async with client.post("/ui/api/login", json={"username": "alice", "password": "no", "eauth": "auto"}) as r:
            wrong = r.status
        async with client.post("/ui/api/login", data={"username": "alice", "password": "pw", "eauth": "auto"}) as r:
            form = r.status  # a cross-site form can send this; a JSON body it cannot
        async with client.post("/ui/api/login", json={"username": "alice", "password": "pw", "eauth": "auto"},
                               headers={"Origin": "https://evil.example"}) as r:
            cross = r.status
        return csrf, cookies, session, wrong, form, cross

    csrf, cookies, session, wrong, form, cross = rig.session(scenario)
    (cookie,) = cookies
    assert cookie.startswith(f"{ui.COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert session == (200, {"signed_in": True, "user": "alice", "eauth": "auto", "expire": rig.clock.now + 3600, "csrf": csrf})
    assert (wrong, form, cross) == (401, 415, 403)


def test_without_a_session_nothing_is_shown(rig):
    async def scenario(client):
        client.session.cookie_jar.update_cookies({ui.COOKIE: "ee" * 32})  # an expired token
        expired = await get(client, "/ui/api/session")
        client.session.cookie_jar.clear()
        return [await get(client, path) for path in
                ("/ui/api/session", "/ui/api/callbacks", f"/ui/api/callbacks/dev1/{rig.failed.jid}",
                 "/ui/api/stats")] + [expired]

    found = rig.session(scenario)
    assert found[0] == (200, {"signed_in": False}) and found[-1] == (200, {"signed_in": False})
    assert [status for status, _ in found[1:-1]] == [401, 401, 401]


def test_the_list_shows_only_what_the_viewer_may_see_filtered_and_each_with_its_jid(rig):
    async def scenario(client):
        await sign_in(client, "bob")  # bob may see dev1 only
        bob = await get(client, "/ui/api/callbacks")
        await sign_in(client, "alice")
        return (bob, await get(client, "/ui/api/callbacks"), await get(client, "/ui/api/callbacks?outcome=failed"),
                await get(client, "/ui/api/callbacks?state=PENDING"), await get(client, "/ui/api/callbacks?device=dev2"),
                await get(client, "/ui/api/callbacks?outcome=nope"))

    bob, alice, failed, pending, dev2, bad = rig.session(scenario)
    assert {(r["device_id"], r["jid"]) for r in bob[1]["results"]} == {("dev1", rig.failed.jid), ("dev1", rig.waiting.jid)}
    assert [r["jid"] for r in alice[1]["results"]] == [rig.waiting.jid, rig.delivered.jid, rig.failed.jid]
    assert [(r["jid"], r["outcome"], r["last_status"]) for r in failed[1]["results"]] == [(rig.failed.jid, "failed", 500)]
    assert [r["outcome"] for r in pending[1]["results"]] == ["waiting"]
    assert [r["device_id"] for r in dev2[1]["results"]] == ["dev2"]
    assert bad[0] == 400 and "outcome" in bad[1]


def test_one_callback_shows_its_attempts_with_the_signatures_sent_and_no_secret(rig):
    async def scenario(client):
        await sign_in(client, "alice")
        mine = await get(client, f"/ui/api/callbacks/dev1/{rig.failed.jid}")
        await sign_in(client, "bob")
        return mine, await get(client, f"/ui/api/callbacks/dev2/{rig.delivered.jid}")

    (status, detail), (hidden, _) = rig.session(scenario)
    assert status == 200 and hidden == 404  # bob may not see dev2: it does not exist for him
    assert detail["url"] == "https://receiver.example.com/hook?…"
    (attempt,) = detail["timeline"]
    assert attempt["status"] == 500 and attempt["success"] is False
    assert attempt["after_seconds"] == 1.5 and attempt["timestamp"] == isoformat(rig.failed.created + 1.5)
    assert attempt["response_excerpt"] == "receiver says no"
    assert attempt["headers"] == {
        "Content-Type": "application/json", "webhook-id": rig.failed.deliveries[0].delivery_id,
        "webhook-timestamp": str(int(rig.failed.created + 1.5)),
        "X-Request-Signature": "ab" * 32, "webhook-signature": "v1,c2ln"}
    text = json.dumps(detail)
    assert "hunter2" not in text and "token=abc" not in text and rig.config.secrets["default"] not in text


def test_redeliver_needs_the_csrf_token_and_goes_through_the_service_with_the_viewers_rights(rig):
    async def scenario(client):
        csrf, _ = await sign_in(client, "bob")
        path = f"/ui/api/callbacks/dev1/{rig.failed.jid}/redeliver"
        outcomes = []
        for headers in ({}, {ui.CSRF_HEADER: "0" * 64}, {ui.CSRF_HEADER: csrf, "Origin": "https://evil.example"},
                        {ui.CSRF_HEADER: csrf}):
            async with client.post(path, json={}, headers=headers) as response:
                outcomes.append((response.status, await response.json()))
        async with client.post(f"/ui/api/callbacks/dev2/{rig.delivered.jid}/redeliver", json={},
                               headers={ui.CSRF_HEADER: csrf}) as response:
            outcomes.append((response.status, None))
        return outcomes

    outcomes = rig.session(scenario)
    assert [status for status, _ in outcomes] == [403, 403, 403, 202, 404]
    assert outcomes[3][1]["redelivery"] == "queued"
    assert rig.redeliveries == [(rig.failed.jid, "dev1")]  # bob's try on dev2 reached nothing


def test_the_chart_counts_attempts_per_hour_and_the_time_to_a_2xx(rig):
    async def scenario(client):
        await sign_in(client, "alice")
        return await get(client, "/ui/api/stats?hours=3"), await get(client, "/ui/api/stats?hours=99")

    (status, stats), (too_many, _) = rig.session(scenario)
    assert status == 200 and too_many == 400
    assert len(stats["buckets"]) == 3
    assert sum(b["delivered"] for b in stats["buckets"]) == 1
    assert sum(b["failed"] for b in stats["buckets"]) == 1
    assert [b["median_seconds"] for b in stats["buckets"] if b["delivered"]] == [0.0]
