"""HTTP delivery: one POST per attempt, with one wall-clock deadline for all of it.

aiohttp, not requests: ``aiohttp.ClientTimeout(total=...)`` bounds the whole
attempt (lookup, connect, send, headers, body), where requests' timeout is per
socket operation and a receiver that drips a byte at a time holds it for ever.
aiohttp is already a Salt dependency, and one event loop carries hundreds of
concurrent deliveries without a thread each.

Anything that speaks ``post(url, body, headers, timeout) -> AttemptResult``
is a transport; tests hand the engine a fake one instead of patching.
"""

import asyncio
import email.utils
import time
import urllib.parse

import aiohttp
import aiohttp.abc

from salt_callbacks.delivery.guard import AddressGuard
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
    """Resolves with ``inner`` and refuses the whole answer if any address is blocked.

    aiohttp connects only to addresses this returns, so what was checked is
    what is contacted.
    """

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


class AiohttpTransport:
    def __init__(self, max_concurrency=200, guard=None, resolver=None):
        """``resolver`` is an aiohttp resolver to check and use (tests inject
        one whose answers change); by default the system's."""
        self._max_concurrency = max_concurrency
        self._guard = guard or AddressGuard()
        self._resolver = resolver
        self._session = None

    def _ensure_session(self):
        # Created lazily: a ClientSession must be born inside the running loop.
        if self._session is None:
            # Per-host limits are the engine's (it must not let one host hold
            # global slots); the connector only caps sockets overall.
            connector = aiohttp.TCPConnector(
                limit=self._max_concurrency,
                resolver=GuardedResolver(self._guard, self._resolver),
                use_dns_cache=False,  # every new connection is resolved and checked afresh
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # a receiver's gzip bomb stays compressed and unread
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def post(self, url, body, headers, timeout):
        session = self._ensure_session()
        try:
            # aiohttp skips the resolver for address literals: check those here.
            self._guard.check_url_host(urllib.parse.urlsplit(url).hostname or "")
            async with session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
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
        except BlockedAddressError as exc:
            return AttemptResult(status=None, error=f"not sent: {exc}")
        except asyncio.TimeoutError:
            return AttemptResult(status=None, error=f"no complete response within {timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                return AttemptResult(status=None, error=f"not sent: {exc.os_error}")
            return AttemptResult(status=None, error=f"cannot connect to {redact_url(url)}: {exc.os_error or exc}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(status=None, error=f"{type(exc).__name__}: {exc}")

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None
