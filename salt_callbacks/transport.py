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

import aiohttp

from .records import AttemptResult
from .redact import redact_url

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


class AiohttpTransport:
    def __init__(self, max_concurrency=200, per_host_limit=20):
        self._max_concurrency = max_concurrency
        self._per_host_limit = per_host_limit
        self._session = None

    def _ensure_session(self):
        # Created lazily: a ClientSession must be born inside the running loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_concurrency, limit_per_host=self._per_host_limit
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
            async with session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                excerpt = await response.content.read(MAX_RESPONSE_BYTES)
                retry_after = None
                if response.status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return AttemptResult(
                    status=response.status,
                    excerpt=excerpt.decode("utf-8", "replace"),
                    retry_after=retry_after,
                )
        except asyncio.TimeoutError:
            return AttemptResult(status=None, error=f"no complete response within {timeout:g} s")
        except aiohttp.ClientConnectorError as exc:
            return AttemptResult(status=None, error=f"cannot connect to {redact_url(url)}: {exc.os_error or exc}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return AttemptResult(status=None, error=f"{type(exc).__name__}: {exc}")

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None
