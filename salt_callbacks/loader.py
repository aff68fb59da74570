"""The ``salt.loader`` entry point: where Salt finds this extension's modules.

In a source checkout (editable install, or the repo used as a file_roots root)
the modules live in the top-level ``_engines/``, ``_runners/``,
``_returners/`` and ``_netapi/`` folders; a wheel carries the same files as
``salt_callbacks/engines`` and so on (setup.cfg maps one onto the other).
"""

import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
#: Loader kind -> the module file of that kind.
MODULES = {
    "engines": "callbacks.py",
    "runners": "callbacks.py",
    "returners": "callbacks.py",
    "netapi": "callbacks_api.py",
}
KINDS = tuple(MODULES)


def _directory(kind):
    checkout = _HERE.parent / f"_{kind}"
    if (checkout / MODULES[kind]).is_file():
        return checkout
    return _HERE / kind


def get_dirs():
    return {kind: [str(_directory(kind))] for kind in KINDS}
