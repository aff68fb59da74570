"""Make what is logged safe: URLs without credentials or query string (tokens
often live there), and log records without anything shaped like a token."""

import logging
import re
import urllib.parse


def redact_url(url):
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparsable url>"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


class TokenRedactingFilter:
    """A ``logging`` filter that replaces anything shaped like a caller's token
    with ``<token>`` before a record is written.

    The HTTP API never logs a token itself, but Salt's cache drivers do when
    the eauth token store fails (the redis driver names the key, which is the
    token, in its error lines). Installed on the API process's log handlers.
    """

    def __init__(self, pattern):
        self._pattern = re.compile(rf"(?<![0-9a-f]){pattern.pattern}(?![0-9a-f])")

    def filter(self, record):
        message = record.getMessage()
        redacted = self._pattern.sub("<token>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info or record.exc_text:
            # Formatted here (or by a handler before this one), so every handler
            # after it writes the redacted text rather than formatting its own.
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._pattern.sub("<token>", text)
        return True

    def install(self, logger=None):
        """Add this filter to every handler of ``logger`` (the root logger by default)."""
        for handler in (logger or logging.getLogger()).handlers:
            handler.addFilter(self)
