"""What the HTTP API process writes to its log never carries a caller's token."""

import logging

from salt_callbacks.api.auth import token_pattern
from salt_callbacks.redact import TokenRedactingFilter

TOKEN = "3f" * 32  # the form of a sha256 eauth token


def emit(record_factory):
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    handler = Keep()
    handler.addFilter(TokenRedactingFilter(token_pattern("sha256")))
    logger = logging.getLogger("test-redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        record_factory(logger)
    finally:
        logger.removeHandler(handler)
    return seen


def test_a_token_in_a_message_or_its_arguments_is_replaced():
    seen = emit(lambda log: (log.error("Cannot check contains of Redis cache key tokens/.%s", TOKEN),
                             log.error(f"key tokens/.{TOKEN}: refused")))

    assert seen == ["Cannot check contains of Redis cache key tokens/.<token>",
                    "key tokens/.<token>: refused"]


def test_a_token_in_a_traceback_is_replaced():
    def log_failure(log):
        try:
            raise ConnectionError(f"cannot fetch tokens/{TOKEN}")
        except ConnectionError:
            log.exception("lookup failed")

    (text,) = emit(log_failure)

    assert TOKEN not in text
    assert "cannot fetch tokens/<token>" in text


def test_longer_hex_and_jids_are_left_alone():
    longer = "ab" * 40
    seen = emit(lambda log: log.info("job %s, digest %s", "20261201120000123456", longer))

    assert seen == [f"job 20261201120000123456, digest {longer}"]
