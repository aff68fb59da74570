"""HTTP delivery: one POST per attempt, with one wall-clock deadline for all of it.

asyncio, not requests: one deadline bounds the whole attempt (lookup,
connect, send, headers, body; ``asyncio.timeout`` on the direct path,
``aiohttp.ClientTimeout(total=...)`` through a proxy), where requests'
timeout is per socket operation and a receiver that drips a byte at a time
holds it for ever. One event loop carries hundreds of concurrent deliveries
without a thread each.

The URL is parsed once (``urls.parse``, cached). A delivery straight to its
receiver goes through the lean HTTP/1.1 client of ``http1.py`` (aiohttp's
client was the largest share of the engine's CPU under load): this module
resolves the host, judges every address against the guard before it is
connected to (names and IP literals alike) and keeps the connections alive
per receiver. A delivery through a proxy (``proxy.py``) goes through
aiohttp, whose connector may reach only the proxy. TLS uses one context built
at start (``tls.py``) on both paths.

Anything that speaks ``post(url, body, headers, timeout) -> AttemptResult``
is a transport; tests hand the engine a fake one instead of patching.
"""

import asyncio
import email.utils
import time

import aiohttp
import aiohttp.abc

from salt_callbacks.delivery import http1, tls, urls
from salt_callbacks.delivery.guard import AddressGuard
from salt_callbacks.delivery.proxy import ProxyRoute
from salt_callbacks.exceptions import BlockedAddressError
from salt_callbacks.model.records import AttemptResult
from salt_callbacks.redact import redact_url

#: Bytes of a response body read per attempt; the rest is never read.
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "salt-callbacks"


def parse_retry_after(value, now=None):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


if hasattr(asyncio, "timeout"):  # Python 3.11+: a timer, no task of its own
    async def _within(seconds, coro):
        async with asyncio.timeout(seconds):
            return await coro
else:  # Python 3.10
    async def _within(seconds, coro):
        return await asyncio.wait_for(coro, seconds)


def _host_header(target):
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != urls.DEFAULT_PORTS[target.scheme]:
        host = f"{host}:{target.port}"
    return host


async def _read_capped(stream, limit):
    """Read the body up to EOF or ``limit`` bytes, whichever first. Reading to
    the end (not just the first chunk) is what lets the attempt's deadline
    cut off a receiver that drips its answer."""
    chunks, size = [], 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves with ``inner`` and refuses the whole answer if any address is blocked."""

    def __init__(self, guard, inner=None):
        self._guard = guard
        self._inner = inner

    async def resolve(self, host, port=0, family=0):
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            self._guard.check(answer["host"])
        return answers

    async def close(self):
        if self._inner is not None:
            await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A connector that checks every address it is about to connect to.

    aiohttp skips the resolver for IP literals; this sits after that branch,
    so a literal is judged like a resolved name. ``only_host`` (the proxy's
    connector) trusts that one host as configured and refuses every other.
    """

    def __init__(self, guard, only_host=None, **kwargs):
        super().__init__(**kwargs)
        self._guard = guard
        self._only_host = only_host

    async def _resolve_host(self, host, port, *args, **kwargs):
        if self._only_host is not None and host.lower().rstrip(".") != self._only_host:
            raise BlockedAddressError(f"{host} is not the configured proxy")
        answers = await super()._resolve_host(host, port, *args, **kwargs)
        if self._only_host is None:
            for answer in answers:
                self._guard.check(answer["host"])
        return answers


class AiohttpTransport:
    def __init__(self, max_concurrency=200, guard=None, resolver=None, ssl_context=None, proxy=None,
                 has_client_cert=False):
        """``resolver`` is an aiohttp resolver to check and use (tests inject
        one whose answers change); by default the system's. ``ssl_context``
        defaults to ``tls.client_context()`` (system CAs); ``proxy`` is a
        ``ProxyRoute`` or None."""
        self._max_concurrency = max_concurrency
        self._guard = guard or AddressGuard()
        self._resolver = GuardedResolver(self._guard, resolver)
        self._ssl = ssl_context or tls.client_context()
        self._has_client_cert = has_client_cert
        self._proxy = proxy
        self._pool = None
        self._proxy_session = None

    @classmethod
    def from_config(cls, config):
        """Raises ``ConfigError`` naming the TLS key whose file cannot be used."""
        proxy = ProxyRoute(config.proxy, config.no_proxy) if config.proxy else None
        return cls(
            config.max_concurrency,
            guard=AddressGuard(config.allow_networks),
            ssl_context=tls.client_context(config.ca_bundle, config.client_cert, config.client_key),
            proxy=proxy,
            has_client_cert=config.client_cert is not None,
        )

    def _new_session(self, connector):
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # a receiver's gzip bomb stays compressed and unread
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # the proxy is callbacks:proxy, never the environment's
        )

    def _direct(self):
        """The keep-alive pool of direct deliveries. Per-host limits are the
        engine's (the dispatcher's slots); every new connection is resolved
        and judged afresh, a kept-alive one is reused as it was judged."""
        if self._pool is None:
            self._pool = http1.Pool(self._ssl)
        return self._pool

    async def _addresses(self, target):
        """The addresses to connect to, each judged by the guard (an IP
        literal as it is, a name as the resolver answers it)."""
        if target.address is not None:
            self._guard.check(target.address)
            return [str(target.address)]
        answers = await self._resolver.resolve(target.host, target.port, 0)  # GuardedResolver judges them
        return list(dict.fromkeys(answer["host"] for answer in answers))

    async def _post_direct(self, url, target, body, headers):
        pool = self._direct()
        key = (target.host, target.port, target.is_tls)
        request = http1.request_bytes("POST", target, headers, body, _host_header(target), USER_AGENT)
        conn, connected = pool.checkout(key), False
        try:
            try:
                if conn is None:
                    conn = await pool.connect(key, await self._addresses(target), target.host)
                    reused = False
                else:
                    reused = True
                connected = True
                try:
                    response, reusable = await http1.exchange(conn, request, MAX_RESPONSE_BYTES)
                except ConnectionError:
                    if not reused or conn.answered:
                        raise
                    # A kept-alive connection the receiver had closed before
                    # reading a byte of ours: once more on a new one.
                    pool.discard(conn)
                    conn, connected = None, False
                    conn = await pool.connect(key, await self._addresses(target), target.host)
                    connected = True
                    response, reusable = await http1.exchange(conn, request, MAX_RESPONSE_BYTES)
            except (OSError, ValueError) as exc:
                if conn is not None:
                    pool.discard(conn)
                if isinstance(exc, BlockedAddressError):
                    return AttemptResult(status=None, error=f"not sent: {exc}")
                return AttemptResult(status=None, error=self._describe_direct(exc, url, target, connected))
        except BaseException:  # the deadline (cancelled) or anything else: the connection is not reused
            if conn is not None:
                pool.discard(conn)
            raise
        pool.release(conn, reusable)
        retry_after = None
        if response.status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        return AttemptResult(status=response.status, excerpt=response.body.decode("utf-8", "replace"),
                             retry_after=retry_after)

    def _describe_direct(self, exc, url, target, connected):
        certificate = tls.describe(exc, target.host)
        if certificate is not None:
            return certificate
        if not connected:
            return f"cannot connect to {redact_url(url)}: {exc}"
        if target.is_tls and isinstance(exc, ConnectionError):
            return tls.describe_reset(exc, target.host, self._has_client_cert)
        if isinstance(exc, http1.Disconnected):
            return str(exc)
        if isinstance(exc, http1.ProtocolError):
            return f"not a valid HTTP answer: {exc}"
        return f"{type(exc).__name__}: {exc}"

    def _proxied(self):
        if self._proxy_session is None:
            self._proxy_session = self._new_session(GuardedConnector(
                self._guard, only_host=self._proxy.host, limit=self._max_concurrency, ssl=self._ssl,
            ))
        return self._proxy_session

    async def _judge_destination(self, target):
        """Through a proxy aiohttp never resolves the destination: resolve it
        here and refuse it if any of its addresses is blocked."""
        if target.address is None:
            await self._resolver.resolve(target.host, target.port)

    async def post(self, url, body, headers, timeout):
        target = None
        try:
            target = urls.parse(url)
            self._guard.check_target(target)  # blocked on its face: no lookup, no connect
            if self._proxy is None or not self._proxy.uses_proxy(target.host):
                return await _within(timeout, self._post_direct(url, target, body, headers))
            options = {}
            started = time.monotonic()
            await asyncio.wait_for(self._judge_destination(target), timeout)
            timeout = max(0.001, timeout - (time.monotonic() - started))
            session = self._proxied()
            options["proxy"] = self._proxy.url
            if self._proxy.authorization:
                # CONNECT carries it for https; a proxied http request carries it itself.
                if target.is_tls:
                    options["proxy_headers"] = {"Proxy-Authorization": self._proxy.authorization}
                else:
                    headers = {**headers, "Proxy-Authorization": self._proxy.authorization}
            async with session.post(
                target.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
                **options,
            ) as response:
                excerpt = await _read_capped(response.content, MAX_RESPONSE_BYTES)
                retry_after = None
                if response.status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return AttemptResult(
                    status=response.status,
                    excerpt=excerpt.decode("utf-8", "replace"),
                    retry_after=retry_after,
                )
        except urls.InvalidURL as exc:
            return AttemptResult(status=None, error=f"not sent: the URL {exc}")
        except BlockedAddressError as exc:
            return AttemptResult(status=None, error=f"not sent: {exc}")
        except asyncio.TimeoutError:
            return AttemptResult(status=None, error=f"no complete response within {timeout:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(status=None, error=self._describe(exc, url, target))

    def _describe(self, exc, url, target):
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, BlockedAddressError):
            return f"not sent: {os_error}"
        certificate = tls.describe(exc, target.host if target else "the receiver")
        if certificate is not None:
            return certificate
        if target is not None and target.is_tls and isinstance(
                exc, (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)) and not isinstance(
                exc, aiohttp.ClientConnectorError):
            return tls.describe_reset(exc, target.host, self._has_client_cert)
        if isinstance(exc, aiohttp.ClientProxyConnectionError):
            return f"cannot connect to the proxy: {os_error or exc}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect to {redact_url(url)}: {os_error or exc}"
        return f"{type(exc).__name__}: {exc}"

    async def close(self):
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        session, self._proxy_session = self._proxy_session, None
        if session is not None:
            await session.close()
