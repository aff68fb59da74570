"""The salt CLI's own argument typing, for raw command lines (``execute_raw``)."""

import salt.utils.args


def parse_cli_args(tokens):
    """Type a raw command's tokens exactly as the salt CLI does: ``key=value``
    becomes a keyword argument, and every value goes through Salt's YAML
    typing (``1`` is an int, ``[a, b]`` a list, ``'ls -l'`` stays a string)."""
    args, kwargs = salt.utils.args.parse_input(tokens, condition=False)
    return list(args), dict(kwargs)
