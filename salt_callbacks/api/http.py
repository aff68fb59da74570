"""The HTTP API (aiohttp): AutoPi's routes, JSON in and out, errors in
REST-framework form (``{"detail": msg}``, or ``{"<field>": [msg]}`` for bad fields).

Every route except ``POST /auth/login/`` needs ``Authorization: APIToken <token>``
or ``Bearer <token>`` with a Salt eauth token (see api/auth.py). The route
handlers only parse HTTP; what they do is ``ApiService``'s. Salt calls block
(the token store, LocalClient, salt.cache), so they run in worker threads
and never hold up the event loop: the login in a pool of its own, the other
routes in another, each with a bounded queue (api/limits.py). Logins are
throttled per client address (429 with ``Retry-After``).

Routes are registered in one place, ``CallbacksApi.routes()``; the
deliveries page adds its own to the same app (``api/ui``), and goes through
``blocking()`` and ``login_call()`` so it shares the pools and the throttle.

A failure nobody planned for answers ``{"detail": "internal error",
"error_id": "<id>"}`` and logs the traceback under that id.

Lifecycle, top to bottom: ``serve()`` starts the site, waits for the stop
event, then stops taking requests and lets those in flight finish.
"""

import asyncio
import logging
import ssl
import uuid

from aiohttp import web

from salt_callbacks.api import openapi
from salt_callbacks.api.bodies import BadRequest, json_object
from salt_callbacks.api.limits import BoundedPool, Busy, LoginThrottle, Throttled
from salt_callbacks.exceptions import (
    AccessDeniedError,
    AuthenticationError,
    CallbackError,
    ConfigError,
    FieldErrors,
    InputError,
    InvalidPageError,
    LimitError,
    NoMinionsError,
    NotFoundError,
    SigningError,
    StoreError,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger(__name__ + ".access")

#: Largest request body accepted (a command and its arguments, not a payload).
MAX_REQUEST_BYTES = 1024 * 1024
WORKER_THREADS = 4
#: Calls that may wait for a worker thread beyond those running; more get a 503 at once.
WORKER_QUEUE = 64
LOGIN_THREADS = 2
LOGIN_QUEUE = 8
#: Login attempts per client address per minute, when the config does not say.
LOGIN_RATE = 10
SHUTDOWN_GRACE = 10.0
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
WWW_AUTHENTICATE = 'Bearer realm="salt-callbacks"'


class CallbacksApi:
    def __init__(self, service, authenticator, threads=WORKER_THREADS, public_url=None, login_rate=LOGIN_RATE,
                 login_threads=LOGIN_THREADS, queue=WORKER_QUEUE, login_queue=LOGIN_QUEUE):
        """``public_url``: where clients reach the API (``callbacks_api:public_url``),
        for the pagination links; relative links without it."""
        self.service = service
        self.authenticator = authenticator
        self.public_url = public_url.rstrip("/") if public_url else None
        self.throttle = LoginThrottle(login_rate)
        self._pool = BoundedPool("API", threads, queue)
        self._login_pool = BoundedPool("login", login_threads, login_queue)

    def routes(self):
        """Every route of the API, in one list."""
        return [
            web.post("/auth/login/", self.login),
            web.get("/dongle/devices/", self.devices),
            web.get("/dongle/devices/by_unit_id/{unit_id}/", self.device_by_unit_id),
            web.post("/dongle/devices/{device_id}/execute/", self.execute),
            web.post("/dongle/devices/{device_id}/execute_raw/", self.execute_raw),
            web.get("/dongle/devices/{device_id}/callback/{jid}/", self.callback),
            web.get("/openapi.json", self.openapi),
            web.get("/schemas/webhook.json", self.webhook_schema),
        ]

    def app(self):
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_REQUEST_BYTES)
        app.add_routes(self.routes())
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    # -- routes -------------------------------------------------------------

    async def login(self, request):
        return _json(await self.login_call(request, await _json_object(request)))

    async def devices(self, request):
        identity = await self._identity(request)
        page = await self._blocking(
            self.service.devices, identity, request.query.get("page"), request.query.get("page_size")
        )
        return _json({
            "count": page["count"],
            "next": self.page_url(request, page["next_page"]),
            "previous": self.page_url(request, page["previous_page"]),
            "results": page["results"],
        })

    async def openapi(self, request):
        # No token: the document describes the API, nothing about any device or user.
        return _json(openapi.document(self.public_url))

    async def webhook_schema(self, request):
        return _json(openapi.WEBHOOK)

    async def device_by_unit_id(self, request):
        identity = await self._identity(request)
        return _json(await self._blocking(self.service.device_by_unit_id, identity, request.match_info["unit_id"]))

    async def execute(self, request):
        identity = await self._identity(request)
        body = await _json_object(request)
        return _json(await self._blocking(self.service.execute, identity, request.match_info["device_id"], body))

    async def execute_raw(self, request):
        identity = await self._identity(request)
        body = await _json_object(request)
        return _json(await self._blocking(self.service.execute_raw, identity, request.match_info["device_id"], body))

    async def callback(self, request):
        identity = await self._identity(request)
        record = await self._blocking(
            self.service.callback, identity, request.match_info["device_id"], request.match_info["jid"]
        )
        return _json(record)

    # -- plumbing -----------------------------------------------------------

    def page_url(self, request, page):
        """A link to ``page`` of this listing: under ``public_url`` when set,
        else relative (the ``Host`` header is the client's to choose)."""
        if page is None:
            return None
        relative = str(request.rel_url.update_query(page=str(page)))
        return f"{self.public_url}{relative}" if self.public_url else relative

    async def login_call(self, request, body):
        """``ApiService.login(body)`` for ``request``'s client: throttled per
        address, on the login pool. Raises ``Throttled``/``Busy``."""
        self.throttle.take(request.remote or "unknown")
        return await self._login_pool.run(self.service.login, body)

    async def blocking(self, func, *args):
        """``func(*args)`` on the API's worker pool (raises ``Busy`` when its queue is full)."""
        return await self._pool.run(func, *args)

    async def _identity(self, request):
        return await self._blocking(self.authenticator.authenticate, request.headers.get("Authorization"))

    _blocking = blocking

    async def _open(self, _app):
        self._pool.open()
        self._login_pool.open()

    async def _close(self, _app):
        # Requests in flight have finished by now (the runner waits for them).
        self._pool.close()
        self._login_pool.close()

    @web.middleware
    async def _errors(self, request, handler):
        """One boundary: every error becomes a REST-framework JSON body."""
        try:
            return await handler(request)
        except CallbackError as exc:
            return _error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json({"detail": _http_detail(exc, request)}, status=exc.status,
                         headers={"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None)
        except Exception:  # boundary: a bug must answer 500, not drop the connection
            return internal_error(f"unexpected error on {request.method} {request.path}", exc_info=True)


def internal_error(what, exc_info=False):
    """A 500 that says nothing of the inside; the log line carries the same ``error_id``."""
    error_id = uuid.uuid4().hex
    log.error("callbacks API: internal error %s: %s", error_id, what, exc_info=exc_info)
    return _json({"detail": "internal error", "error_id": error_id}, status=500)


def _error_response(exc):
    if isinstance(exc, BadRequest):
        return _json({"detail": str(exc)}, status=400)
    if isinstance(exc, Throttled):
        return _json({"detail": str(exc)[:1].upper() + str(exc)[1:] + "."}, status=429,
                     headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, Busy):
        return _json({"detail": str(exc)[:1].upper() + str(exc)[1:] + "."}, status=503,
                     headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, AuthenticationError):
        return _json({"detail": exc.detail}, status=401, headers={"WWW-Authenticate": WWW_AUTHENTICATE})
    if isinstance(exc, FieldErrors):
        return _json(exc.fields, status=400)
    if isinstance(exc, (NotFoundError, NoMinionsError)):
        # NoMinionsError: the device was accepted a moment ago and no longer is.
        return _json({"detail": "Not found."}, status=404)
    if isinstance(exc, InvalidPageError):
        return _json({"detail": "Invalid page."}, status=404)
    if isinstance(exc, InputError):
        return _json({exc.param: [exc.message[:1].upper() + exc.message[1:]]}, status=400)
    if isinstance(exc, AccessDeniedError):
        return _json({"detail": str(exc)}, status=403)
    if isinstance(exc, LimitError):
        return _json({"detail": str(exc), "limit": exc.limit}, status=429)
    if isinstance(exc, (StoreError, SigningError)):
        log.error("callbacks API: %s", exc)
        return _json({"detail": "The service is unavailable; try again later."}, status=503)
    return internal_error(f"request failed: {type(exc).__name__}: {exc}")


def _http_detail(exc, request):
    if exc.status == 404:
        return "Not found."
    if exc.status == 405:
        return f'Method "{request.method}" not allowed.'
    if exc.status == 413:
        return f"Request body larger than {MAX_REQUEST_BYTES} bytes."
    return exc.reason


async def _json_object(request):
    return json_object(await request.read())


def _json(data, status=200, headers=None):
    return web.json_response(data, status=status, headers=headers)


def ssl_context(config):
    """The TLS context for ``callbacks_api:ssl_crt``/``ssl_key``, or None with ``disable_ssl``."""
    if config.disable_ssl:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.ssl_crt, config.ssl_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"callbacks_api:ssl_crt/ssl_key ({config.ssl_crt}, {config.ssl_key}) cannot be loaded: {exc}"]) from exc
    return context


async def serve(app, host, port, tls=None, should_exit=None, started=None):
    """Serve ``app`` until ``should_exit`` is set. ``started(port)`` is called
    once the socket listens (with the real port when ``port`` is 0)."""
    runner = web.AppRunner(app, access_log=access_log, access_log_format=ACCESS_LOG_FORMAT,
                           shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("callbacks API listening on %s://%s:%s", "https" if tls else "http", host, bound)
    if started is not None:
        started(bound)
    try:
        await (should_exit or asyncio.Event()).wait()
    finally:
        log.info("callbacks API stopping: no new requests, letting those in flight finish")
        await runner.cleanup()
        log.info("callbacks API stopped")
