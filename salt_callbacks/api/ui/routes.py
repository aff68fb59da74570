"""The deliveries page under ``/ui/``, added to the HTTP API's app (``install``).

Sign-in is the API's own: ``ApiService.login`` (Salt eauth, no user store of
ours) gives a Salt eauth token, kept in an ``HttpOnly; SameSite=Strict``
cookie scoped to ``/ui/``; each request is authenticated from it by the API's
``Authenticator``, as a ``Bearer`` header would be. What the page shows and
does goes through the same ``CallbackService`` functions as ``salt-run
callbacks.list/get/redeliver``, called as the signed-in user, so it shows
only what that user may see and redelivers with that user's rights.

CSRF: every POST must come from this origin (``Origin``/``Sec-Fetch-Site``
when the browser sends them) with a JSON body (a cross-site form cannot send
one), and once signed in must carry ``X-CSRF-Token``, an HMAC of the session
token under a key of this process (``GET /ui/api/session`` gives it to the
page). The page is static files shipped in the package (no build step, no
CDN) under a strict Content-Security-Policy: no inline script or style.
"""

import hashlib
import hmac
import importlib.resources
import os
import time
import urllib.parse

from aiohttp import web

from salt_callbacks.api.bodies import json_object
from salt_callbacks.api.ui import views
from salt_callbacks.exceptions import AuthenticationError, InputError

COOKIE = "salt_callbacks_session"
CSRF_HEADER = "X-CSRF-Token"
PREFIX = "/ui"
#: Records read for the list (before the outcome filter) and for the chart.
MAX_LIST = 500
STATS_RECORDS = 5000
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def install(app, api, eauth_backends=(), clock=time.time):
    """Add the page's routes to ``app`` (a ``CallbacksApi.app()``, not yet started).
    ``eauth_backends``: what the sign-in form offers (the master's ``external_auth``)."""
    page = DeliveriesPage(api, eauth_backends, clock)
    app.add_routes([
        web.get(PREFIX, page.redirect),
        web.get(PREFIX + "/", page.index),
        web.get(PREFIX + "/static/{name}", page.static),
        web.get(PREFIX + "/api/eauth", page.eauth),
        web.post(PREFIX + "/api/login", page.login),
        web.post(PREFIX + "/api/logout", page.logout),
        web.get(PREFIX + "/api/session", page.session),
        web.get(PREFIX + "/api/callbacks", page.callbacks),
        web.get(PREFIX + "/api/callbacks/{device_id}/{jid}", page.callback),
        web.post(PREFIX + "/api/callbacks/{device_id}/{jid}/redeliver", page.redeliver),
        web.get(PREFIX + "/api/stats", page.stats),
    ])
    app.on_response_prepare.append(_security_headers)
    return page


async def _security_headers(request, response):
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


class DeliveriesPage:
    def __init__(self, api, eauth_backends=(), clock=time.time):
        self.backends = sorted(str(name) for name in eauth_backends)
        self.api = api  # its pools and login throttle (blocking, login_call) serve the page too
        self.service = api.service  # ApiService: login, and .callbacks (CallbackService)
        self.authenticator = api.authenticator
        self.clock = clock
        self._csrf_key = os.urandom(32)  # a restart signs everyone's page out of POSTs: it reloads
        self._files = {name: _read_static(name) for name in STATIC}

    # -- static -------------------------------------------------------------

    async def redirect(self, request):
        raise web.HTTPFound(PREFIX + "/")

    async def index(self, request):
        return self._file("index.html")

    async def static(self, request):
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name):
        return web.Response(body=self._files[name], content_type=STATIC[name], charset="utf-8")

    # -- session ------------------------------------------------------------

    async def eauth(self, request):
        """The eauth backends the sign-in form offers: those the master enables."""
        return web.json_response({"backends": self.backends})

    async def login(self, request):
        _same_origin(request)
        body = await _json_body(request)
        token = (await self.api.login_call(request, body))["token"]
        identity = await self.api.blocking(self.authenticator.authenticate, f"Bearer {token}")
        response = web.json_response(self._session_body(identity))
        response.set_cookie(COOKIE, token, path=PREFIX + "/", httponly=True, samesite="Strict",
                            secure=request.secure, max_age=max(0, int(identity.expire - self.clock())))
        return response

    async def logout(self, request):
        await self._identity(request, post=True)
        response = web.json_response({"signed_out": True})
        response.del_cookie(COOKIE, path=PREFIX + "/")
        return response

    async def session(self, request):
        """Who is signed in; ``{"signed_in": false}`` (not a 401) when nobody is, as the page asks first."""
        try:
            identity = await self._identity(request)
        except AuthenticationError:
            return web.json_response({"signed_in": False})
        return web.json_response(self._session_body(identity))

    def _session_body(self, identity):
        return {"signed_in": True, "user": identity.user, "eauth": identity.eauth, "expire": identity.expire,
                "csrf": self._csrf(identity.token)}

    def _csrf(self, token):
        return hmac.new(self._csrf_key, token.encode("ascii"), hashlib.sha256).hexdigest()

    async def _identity(self, request, post=False):
        token = request.cookies.get(COOKIE)
        if not token:
            raise AuthenticationError("Not signed in.")
        identity = await self.api.blocking(self.authenticator.authenticate, f"Bearer {token}")
        if post:
            _same_origin(request)
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), self._csrf(identity.token).encode()):
                raise web.HTTPForbidden(reason="CSRF token missing or wrong: reload the page.")
        return identity

    # -- callbacks ----------------------------------------------------------

    async def callbacks(self, request):
        identity = await self._identity(request)
        query = request.query
        outcome = query.get("outcome") or None
        if outcome is not None and outcome not in views.OUTCOMES:
            raise InputError("outcome", f"must be one of {', '.join(views.OUTCOMES)}, got {outcome!r}")
        limit = _bounded_int("limit", query.get("limit"), 100, MAX_LIST)
        found = await self.api.blocking(self.service.callbacks.list_records, identity.caller, query.get("device") or None,
                                query.get("state") or None, MAX_LIST if outcome else limit)
        rows = [views.row(view) for view in found]
        if outcome is not None:
            rows = [r for r in rows if r["outcome"] == outcome]
        return web.json_response({"results": rows[:limit]})

    async def callback(self, request):
        identity = await self._identity(request)
        view = await self.api.blocking(self.service.callbacks.get, identity.caller, request.match_info["device_id"],
                               request.match_info["jid"])
        return web.json_response(views.detail(view))

    async def redeliver(self, request):
        identity = await self._identity(request, post=True)
        queued = await self.api.blocking(self.service.callbacks.redeliver, identity.caller, request.match_info["device_id"],
                                 request.match_info["jid"])
        return web.json_response(queued, status=202)

    async def stats(self, request):
        identity = await self._identity(request)
        hours = _bounded_int("hours", request.query.get("hours"), 6, views.MAX_HOURS)
        found = await self.api.blocking(self.service.callbacks.list_records, identity.caller, None, None, STATS_RECORDS)
        return web.json_response(views.stats(found, self.clock(), hours))


def _read_static(name):
    return (importlib.resources.files("salt_callbacks.api.ui") / "static" / name).read_bytes()


def _same_origin(request):
    """Refuse a POST another site's page made (the browser says so in these headers)."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site is not None and site not in ("same-origin", "none"):
        raise web.HTTPForbidden(reason="Cross-site request refused.")
    if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(reason="Cross-origin request refused.")


async def _json_body(request):
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="Send a JSON body (Content-Type: application/json).")
    return json_object(await request.read())  # the API's own checks: depth, NaN, UTF-8; a clear 400


def _bounded_int(name, value, default, maximum):
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise InputError(name, f"must be an integer from 1 to {maximum}, got {value!r}")
    return int(value)
