"""
AutoPi's HTTP API on a Salt master: run commands on devices (minions) with
a callback URL, get webhooks signed with the caller's own token, and read the
callback records back. Started by ``salt-api`` when configured:

.. code-block:: yaml

    callbacks_api:
      port: 8100
      ssl_crt: /etc/pki/tls/certs/localhost.crt
      ssl_key: /etc/pki/tls/certs/localhost.key
      # disable_ssl: true     # plain HTTP, for local use or behind a TLS proxy

Routes (trailing slashes as in AutoPi's API):

- ``POST /auth/login/`` ``{"username", "password", "eauth"}`` -> ``{"token"}``
- ``GET /dongle/devices/`` (``?page=``, ``?page_size=``)
- ``POST /dongle/devices/<device_id>/execute/``
- ``POST /dongle/devices/<device_id>/execute_raw/``
- ``GET /dongle/devices/<device_id>/callback/<jid>/``

Every route but the login needs ``Authorization: APIToken <token>`` or
``Bearer <token>``. Webhook settings stay in ``callbacks:``; the
``callbacks`` engine sends the webhooks. See the salt-callbacks README.
"""

__virtualname__ = "callbacks_api"


def __virtual__():
    # salt-api starts every loaded netapi module: load only when configured.
    if __virtualname__ not in __opts__:
        return False, "callbacks_api is not configured (no callbacks_api: block in the master config)"
    try:
        import salt_callbacks.main  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        return False, f"salt-callbacks core package is not importable: {exc}"
    return __virtualname__


def start():
    from salt_callbacks import main  # pylint: disable=import-outside-toplevel

    main.run_api(__opts__)
