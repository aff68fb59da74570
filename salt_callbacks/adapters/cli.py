"""The salt CLI's own argument typing, for raw command lines (``execute_raw``)."""

import salt.utils.args

from salt_callbacks.model.validation import raw_value


def parse_cli_args(tokens):
    """Type a raw command's tokens exactly as the salt CLI does: ``key=value``
    becomes a keyword argument, and every value goes through Salt's YAML
    typing (``1`` is an int, ``[a, b]`` a list, ``'ls -l'`` stays a string).

    Each value is checked first (``validation.raw_value``): YAML anchors and
    aliases, or nesting past a bound, are an ``InputError`` naming
    ``command``, before Salt's loader builds anything."""
    for token in tokens:
        name, value = salt.utils.args.parse_kwarg(token) if isinstance(token, str) else (None, token)
        raw_value(value if name else token)
    args, kwargs = salt.utils.args.parse_input(tokens, condition=False)
    return list(args), dict(kwargs)
