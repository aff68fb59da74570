"""
Run commands on minions and get a signed webhook when they finish or time out.

Configuration lives in the master config's ``callbacks:`` block (see the
salt-callbacks README); the ``callbacks`` engine sends the webhooks.

Errors come back as ``{"error": "<parameter>: <what is wrong>", "retcode": 2}``
so ``salt-run`` prints a clear message and exits non-zero, without a traceback,
and salt-api callers get the same dict.
"""

import logging

log = logging.getLogger(__name__)

__virtualname__ = "callbacks"
__func_alias__ = {"list_": "list"}

#: Exit status of salt-run when the request itself is wrong.
INVALID_REQUEST = 2


def __virtual__():
    try:
        import salt_callbacks.factory  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        return False, f"salt-callbacks core package is not importable: {exc}"
    return __virtualname__


def _caller():
    # Salt injects __user__ (the eauth or system user who called the runner);
    # factory.runner_caller tells which of the two it is.
    return globals().get("__user__") or "UNKNOWN"


def _call(use_case):
    """Run ``use_case(service, user)`` (a ``CallbackService`` method for the caller),
    turning core errors into Salt's runner conventions (an error dict with
    ``retcode``, no traceback)."""
    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel
    from salt_callbacks.exceptions import CallbackError  # pylint: disable=import-outside-toplevel

    try:
        return use_case(factory.build_service(__opts__), factory.runner_caller(__opts__, _caller()))
    except CallbackError as exc:
        log.info("callbacks runner refused a request: %s", exc)
        __context__["retcode"] = INVALID_REQUEST
        return {"error": str(exc), "retcode": INVALID_REQUEST}


def _request(**fields):
    from salt_callbacks.service import ExecuteRequest  # pylint: disable=import-outside-toplevel

    return ExecuteRequest(**fields)


def _raw_request(command, **fields):
    from salt_callbacks import factory  # pylint: disable=import-outside-toplevel
    from salt_callbacks.service import ExecuteRequest  # pylint: disable=import-outside-toplevel

    return ExecuteRequest.from_command_line(command, factory.parse_cli_args, **fields)


def execute(
    device_id,
    command,
    arg=None,
    kwarg=None,
    callback_url=None,
    callback_timeout=None,
    tgt_type="glob",
    returner=None,
):
    """
    Publish ``command`` (``module.function``) on ``device_id`` asynchronously.

    With ``callback_url``, a signed webhook goes there when each targeted
    device returns (``COMMAND_EXECUTED``), or when ``callback_timeout``
    seconds (1-600, default ``callbacks:default_timeout``) pass first
    (``TIMEOUT``; a late result is still delivered). Returns ``{"jid", "minions"}``.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.execute minion1 test.ping callback_url=https://example.com/hook
        salt-run callbacks.execute 'web*' cmd.run arg='["uptime"]' callback_url=https://example.com/hook callback_timeout=30
        salt-run callbacks.execute minion1 test.arg arg='[1, 2]' kwarg='{a: 1}'
    """
    return _call(lambda service, user: service.execute(user, _request(
        device_id=device_id, command=command, arg=arg, kwarg=kwarg, callback_url=callback_url,
        callback_timeout=callback_timeout, tgt_type=tgt_type, returner=returner)))


def execute_raw(device_id, command, callback_url=None, callback_timeout=None, tgt_type="glob", returner=None):
    """
    Like ``callbacks.execute``, but ``command`` is one raw command line, split
    and typed as the salt CLI does it.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.execute_raw minion1 "cmd.run 'ls -l'" callback_url=https://example.com/hook
        salt-run callbacks.execute_raw minion1 "state.sls pending" callback_url=https://example.com/hook
        salt-run callbacks.execute_raw minion1 "test.arg a b c=1"
    """
    return _call(lambda service, user: service.execute(user, _raw_request(
        command, device_id=device_id, callback_url=callback_url, callback_timeout=callback_timeout,
        tgt_type=tgt_type, returner=returner)))


def get(device_id, jid):
    """
    The callback record of ``jid`` on ``device_id``: every attempt sent
    (``sent_requests``), the URL, the command and the timeout.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.get minion1 20260101000000000000
    """
    return _call(lambda service, user: service.get(user, device_id, str(jid)))


def redeliver(device_id, jid):
    """
    Send the latest payload of a callback record once more, as a new attempt
    (with the current keys). The attempt shows up in ``callbacks.get``.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.redeliver minion1 20260101000000000000
    """
    return _call(lambda service, user: service.redeliver(user, device_id, str(jid)))


def redeliver_failed(receiver=None, since=None, limit=None):
    """
    Redeliver, in bulk, what failed for good for one receiver since a time:
    every record whose latest payload failed and was last tried at or after
    ``since``, on a ``receiver`` (scheme, host and port of its URL), that the
    caller may redeliver (exactly what ``callbacks.redeliver`` allows them).
    ``since``: ISO 8601 (UTC unless it says otherwise) or Unix seconds.
    ``limit`` (default 1000, at most 10000) bounds one call; ``more: true``
    says there is more to send.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.redeliver_failed receiver=https://hooks.example.com since=2026-01-01T08:00:00Z
        salt-run callbacks.redeliver_failed receiver=http://10.0.0.5:8080/hook since=1767254400 limit=100
    """
    from salt_callbacks.service import bulk  # pylint: disable=import-outside-toplevel

    return _call(lambda service, user: bulk.redeliver_failed(service, user, receiver, since, limit))


def list_(device_id=None, state=None, limit=100):
    """
    Recent callback records, newest first, each with its ``jid``.

    ``state`` keeps records whose last payload sent was ``COMMAND_EXECUTED``
    or ``TIMEOUT``, or ``PENDING`` for those with nothing sent yet.

    CLI Example:

    .. code-block:: bash

        salt-run callbacks.list
        salt-run callbacks.list device_id=minion1 state=TIMEOUT limit=10
    """
    return _call(lambda service, user: service.list_records(user, device_id, state, limit))
