"""
The callbacks engine: watches job returns on the master event bus and sends
the signed webhooks that ``callbacks.execute`` asked for, TIMEOUTs included.

.. code-block:: yaml

    engines:
      - callbacks: {}

All settings live in the master config's ``callbacks:`` block, which the
runner reads too.
"""

__virtualname__ = "callbacks"


def __virtual__():
    try:
        import salt_callbacks.main  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        return False, f"salt-callbacks core package is not importable: {exc}"
    return __virtualname__


def start(**kwargs):
    from salt_callbacks import main  # pylint: disable=import-outside-toplevel

    main.run_engine(__opts__, engine_kwargs=kwargs)
