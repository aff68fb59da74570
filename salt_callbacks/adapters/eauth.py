"""Salt's eauth token store and login, for the HTTP API."""

import logging

log = logging.getLogger(__name__)


class SaltTokens:
    """Salt's eauth token store and eauth login, for the HTTP API.

    Tokens are read without ``LoadAuth.get_tok``, which logs a rejected
    token in plain text (and deletes what it finds invalid). The caller has
    already checked the token's form (``api.auth.token_pattern``), so it is a
    safe store key. ``contains`` is asked first because the localfs cache
    logs the path of a missing key, and that path holds the token.
    Expiry is judged by the caller (``api.auth.Authenticator``); an expired
    token is left for Salt's own maintenance to remove.
    """

    def __init__(self, opts):
        import salt.auth  # pylint: disable=import-outside-toplevel

        self.opts = opts
        self._auth = salt.auth.LoadAuth(opts)

    def lookup(self, token):
        """The token's data (``name``, ``eauth``, ``expire``, ...), or None."""
        import salt.exceptions  # pylint: disable=import-outside-toplevel

        from salt_callbacks.exceptions import StoreError  # pylint: disable=import-outside-toplevel

        cache = getattr(self._auth, "cache", None)
        try:
            if cache is not None and self.opts.get("eauth_tokens.cache_driver") != "rediscluster":
                if not cache.contains("tokens", token):
                    return None
                data = cache.fetch("tokens", token)
            else:  # Salt 3006/3007, or the rediscluster token backend
                data = self._auth.tokens[f"{self.opts['eauth_tokens']}.get_token"](self.opts, token)
        except salt.exceptions.SaltDeserializationError as exc:
            log.warning("callbacks API: an entry in Salt's token store cannot be read (%s)", type(exc).__name__)
            return None
        except (OSError, salt.exceptions.SaltCacheError) as exc:
            raise StoreError(f"Salt's token store could not be read ({type(exc).__name__})") from exc
        return data if isinstance(data, dict) and data else None

    def login(self, username, password, eauth):
        """A new Salt eauth token for these credentials, or None when eauth refuses them."""
        tdata = self._auth.mk_token({"username": username, "password": password, "eauth": eauth})
        return tdata.get("token") if isinstance(tdata, dict) else None
