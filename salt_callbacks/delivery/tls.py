"""TLS for deliveries: one client context, built once, and certificate errors in plain words.

Verification is always on (there is no setting to turn it off): the system's
CAs by default, plus ``callbacks: ca_bundle`` (a PEM file of extra CAs,
trusted beside the system's, never instead of them). ``client_cert`` (PEM,
the certificate and optionally its key) and ``client_key`` (PEM) present a
client certificate to receivers that require one.

The context is made once per transport and shared by every connection, so an
attempt pays nothing for it.
"""

import ssl

from salt_callbacks.exceptions import ConfigError

#: OpenSSL verify codes (``X509_V_ERR_*``) worth a sentence of their own.
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_NOT_YET_VALID = {9}  # CERT_NOT_YET_VALID
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # unable to get issuer, self-signed, untrusted chain
_WRONG_HOST = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH


def client_context(ca_bundle=None, client_cert=None, client_key=None):
    """The ``ssl.SSLContext`` deliveries use. Raises ``ConfigError`` naming
    the key whose file cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system CAs, host names checked
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError([f"callbacks:ca_bundle {ca_bundle!r} cannot be loaded as PEM CA certificates: {_why(exc)}"]) from exc
    if client_key is not None and client_cert is None:
        raise ConfigError(["callbacks:client_key is set without callbacks:client_cert"])
    if client_cert is not None:
        try:
            context.load_cert_chain(certfile=client_cert, keyfile=client_key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            key = "client_key" if client_key is not None and "key" in _why(exc).lower() else "client_cert"
            raise ConfigError([f"callbacks:{key}: the client certificate {client_cert!r}"
                               f"{' with key ' + repr(client_key) if client_key else ''} cannot be loaded: {_why(exc)}"]) from exc
    return context


def _why(exc):
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return getattr(exc, "reason", None) or str(exc)


def describe(exc, host):
    """A plain sentence for a TLS failure with ``host`` (always naming the
    certificate), or None when ``exc`` is not one."""
    cert = _find(exc, ssl.SSLCertVerificationError)
    if cert is not None:
        code = getattr(cert, "verify_code", None)
        detail = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or str(cert)
        if code in _EXPIRED:
            what = "the receiver's certificate has expired"
        elif code in _NOT_YET_VALID:
            what = "the receiver's certificate is not valid yet"
        elif code in _WRONG_HOST:
            what = f"the receiver's certificate is not valid for the host name {host}"
        elif code in _UNTRUSTED:
            what = "the receiver's certificate is not signed by a trusted CA (add its CA with callbacks:ca_bundle)"
        else:
            what = "the receiver's certificate was refused"
        return f"TLS certificate problem with {host}: {what} ({detail})"
    error = _find(exc, ssl.SSLError)
    if error is None:
        return None
    reason = str(getattr(error, "reason", "") or error)
    upper = reason.upper()
    if "CERTIFICATE_REQUIRED" in upper or "HANDSHAKE_FAILURE" in upper and "CERT" in upper:
        return (f"TLS certificate problem with {host}: the receiver requires a client certificate "
                f"(set callbacks:client_cert) ({reason})")
    if "CERTIFICATE" in upper or "CERT" in upper:
        return f"TLS certificate problem with {host}: the receiver refused our client certificate ({reason})"
    return f"TLS handshake with {host} failed ({reason}); no certificate was accepted"


def _find(exc, kind):
    """The innermost-first ``kind`` among ``exc`` and what it wraps (aiohttp's
    wrappers, their causes, the errors of each address tried), preferring one
    that carries OpenSSL's verify code."""
    found, seen, todo = [], set(), [exc]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            found.append(current)
        todo.extend([getattr(current, "certificate_error", None), getattr(current, "os_error", None),
                     current.__cause__, current.__context__])
        todo.extend(getattr(current, "exceptions", None) or ())
    with_code = [e for e in found if getattr(e, "verify_code", None) is not None]
    return (with_code or found or [None])[-1] if not with_code else with_code[0]


def describe_reset(exc, host, has_client_cert):
    """A TLS connection closed or reset before any answer. With TLS 1.3 a
    receiver checks the client's certificate after the handshake and its
    alert is often lost in the reset, so say what is most likely."""
    if has_client_cert:
        hint = "a receiver that does not accept our client certificate (callbacks:client_cert) does this"
    else:
        hint = "a receiver that requires a client certificate does this when none is presented (set callbacks:client_cert)"
    return f"the receiver {host} closed the TLS connection before answering ({exc}); {hint}"
