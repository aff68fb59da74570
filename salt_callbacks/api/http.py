"""The HTTP API (aiohttp): AutoPi's routes, JSON in and out, errors in
REST-framework form (``{"detail": msg}``, or ``{"<field>": [msg]}`` for bad fields).

Every route except ``POST /auth/login/`` needs ``Authorization: APIToken <token>``
or ``Bearer <token>`` with a Salt eauth token (see api/auth.py). The route
handlers only parse HTTP; what they do is ``ApiService``'s. Salt calls block
(the token store, LocalClient, salt.cache), so they run in a few worker
threads and never hold up the event loop.

Lifecycle, top to bottom: ``serve()`` starts the site, waits for the stop
event, then stops taking requests and lets those in flight finish.
"""

import asyncio
import concurrent.futures
import json
import logging
import ssl

from aiohttp import web

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
SHUTDOWN_GRACE = 10.0
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'
WWW_AUTHENTICATE = 'Bearer realm="salt-callbacks"'


class CallbacksApi:
    def __init__(self, service, authenticator, threads=WORKER_THREADS):
        self.service = service
        self.authenticator = authenticator
        self._threads = threads
        self._pool = None  # the app's worker threads, from its startup to its cleanup

    def app(self):
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([
            web.post("/auth/login/", self.login),
            web.get("/dongle/devices/", self.devices),
            web.post("/dongle/devices/{device_id}/execute/", self.execute),
            web.post("/dongle/devices/{device_id}/execute_raw/", self.execute_raw),
            web.get("/dongle/devices/{device_id}/callback/{jid}/", self.callback),
        ])
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    # -- routes -------------------------------------------------------------

    async def login(self, request):
        body = await _json_object(request)
        return _json(await self._blocking(self.service.login, body))

    async def devices(self, request):
        identity = await self._identity(request)
        page = await self._blocking(
            self.service.devices, identity, request.query.get("page"), request.query.get("page_size")
        )
        return _json({
            "count": page["count"],
            "next": _page_url(request, page["next_page"]),
            "previous": _page_url(request, page["previous_page"]),
            "results": page["results"],
        })

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

    async def _identity(self, request):
        return await self._blocking(self.authenticator.authenticate, request.headers.get("Authorization"))

    async def _blocking(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def _open(self, _app):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="callbacks-api")

    async def _close(self, _app):
        # Requests in flight have finished by now (the runner waits for them).
        self._pool.shutdown(wait=True, cancel_futures=True)

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
            log.error("callbacks API: unexpected error on %s %s", request.method, request.path, exc_info=True)
            return _json({"detail": "A server error occurred."}, status=500)


class _BadRequest(CallbackError):
    """A body that is not a JSON object (a request-level error, not a field's)."""


def _error_response(exc):
    if isinstance(exc, _BadRequest):
        return _json({"detail": str(exc)}, status=400)
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
    log.error("callbacks API: request failed: %s", exc)
    return _json({"detail": str(exc)}, status=500)


def _http_detail(exc, request):
    if exc.status == 404:
        return "Not found."
    if exc.status == 405:
        return f'Method "{request.method}" not allowed.'
    if exc.status == 413:
        return f"Request body larger than {MAX_REQUEST_BYTES} bytes."
    return exc.reason


async def _json_object(request):
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadRequest(f"JSON parse error - {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest(f"Expected a JSON object, got {type(body).__name__}.")
    return body


def _json(data, status=200, headers=None):
    return web.json_response(data, status=status, headers=headers)


def _page_url(request, page):
    if page is None:
        return None
    return str(request.url.update_query(page=str(page)))


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
