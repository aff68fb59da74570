"""The lean HTTP/1.1 client of direct deliveries (``http1.py``), through the
transport, against bare TCP receivers on 127.0.0.1 that answer byte for byte
what each test writes."""

import asyncio
import contextlib

import pytest

from salt_callbacks.delivery.transport import MAX_RESPONSE_BYTES
from tests.support.fakes import run
from tests.unit.delivery.test_transport import BODY, HEADERS, loopback_transport

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def scripted(answers):
    """A receiver that, per connection, reads one request at a time and
    writes the next answer of ``answers`` (``None``: close instead;
    ``("close", answer)``: write it, then close). Yields
    ``(base URL, stats)``: connections accepted, requests read."""
    stats = {"connections": 0, "requests": 0}
    queue = list(answers)
    handlers = set()

    async def handle(reader, writer):
        handlers.add(asyncio.current_task())
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                await reader.readexactly(length)
                stats["requests"] += 1
                answer = queue.pop(0) if queue else None
                if answer is None:
                    break
                then_close = isinstance(answer, tuple)
                writer.write(answer[1] if then_close else answer)
                await writer.drain()
                if then_close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", stats
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def posts(answers, count, between=None):
    async def scenario():
        transport = loopback_transport()
        try:
            async with scripted(answers) as (url, stats):
                results = []
                for _ in range(count):
                    results.append(await transport.post(url, BODY, HEADERS, 5))
                    if between is not None:
                        await between()
                return results, dict(stats)
        finally:
            await transport.close()

    return run(scenario())


def test_sequential_deliveries_share_one_kept_alive_connection():
    results, stats = posts([OK] * 3, 3)

    assert [(r.status, r.excerpt) for r in results] == [(200, "ok")] * 3
    assert stats == {"connections": 1, "requests": 3}


def test_connection_close_is_honoured_the_next_delivery_connects_anew():
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    results, stats = posts([close, OK], 2)

    assert [r.status for r in results] == [200, 200]
    assert stats["connections"] == 2


def test_a_chunked_answer_is_read_whole_and_the_connection_kept():
    chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"

    results, stats = posts([chunked, OK], 2)

    assert [(r.status, r.excerpt) for r in results] == [(201, "abcde"), (200, "ok")]
    assert stats["connections"] == 1


def test_a_large_chunked_answer_gives_at_most_the_excerpt_and_is_not_reused():
    big = b"x" * 3000
    chunk = b"%x\r\n" % len(big) + big + b"\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"

    results, stats = posts([answer, OK], 2)

    assert results[0].status == 200 and len(results[0].excerpt) == MAX_RESPONSE_BYTES
    assert results[1].status == 200
    assert stats["connections"] == 2  # the first answer was not read to its end


def test_an_interim_100_continue_is_skipped():
    results, _ = posts([b"HTTP/1.1 100 Continue\r\n\r\n" + OK], 1)

    assert (results[0].status, results[0].excerpt) == (200, "ok")


def test_a_101_switching_protocols_answer_is_never_reused():
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    results, stats = posts([switching, OK], 2)

    assert [r.status for r in results] == [101, 200]
    assert stats["connections"] == 2  # the next delivery does not speak HTTP into the switched connection


def test_an_answer_without_length_runs_to_the_close():
    results, stats = posts([("close", b"HTTP/1.1 500 Oops\r\n\r\nbroken"), OK], 2)

    assert (results[0].status, results[0].excerpt) == (500, "broken")
    assert results[1].status == 200
    assert stats["connections"] == 2


def test_a_kept_alive_connection_the_receiver_closed_is_replaced_once_without_an_error():
    # The receiver answers once, then closes that connection on the next request.
    async def later():
        await asyncio.sleep(0)

    results, stats = posts([OK, None, OK], 2, between=later)

    assert [r.status for r in results] == [200, 200]
    assert stats["connections"] == 2 and stats["requests"] == 3


def test_a_receiver_that_closes_without_answering_is_an_error_not_a_status():
    results, _ = posts([None], 1)

    assert results[0].status is None
    assert "closed the connection" in results[0].error


def test_garbage_instead_of_http_is_an_error_naming_it():
    results, _ = posts([b"SSH-2.0-OpenSSH\r\n\r\n"], 1)

    assert results[0].status is None
    assert results[0].error.startswith("not a valid HTTP answer")


def test_a_header_value_with_a_line_break_is_not_sent():
    async def scenario():
        transport = loopback_transport()
        try:
            async with scripted([OK]) as (url, stats):
                result = await transport.post(url, BODY, {"X-Evil": "a\r\nX-Injected: 1"}, 5)
                return result, dict(stats)
        finally:
            await transport.close()

    result, stats = run(scenario())

    assert result.status is None and "line break" in result.error
    assert stats["requests"] == 0
