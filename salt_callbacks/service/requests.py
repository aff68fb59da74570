"""``ExecuteRequest``: one command to run on a device, with or without a callback."""

import dataclasses

from salt_callbacks.model import validation


@dataclasses.dataclass(frozen=True)
class ExecuteRequest:
    """What a caller asked for, as given (``CallbackService.execute`` validates it).

    ``raw`` is the command line of ``execute_raw``, kept in the record for
    the caller to read back; ``command``/``arg``/``kwarg`` are then what it
    was split and typed into.
    """

    device_id: object
    command: object
    arg: object = None
    kwarg: object = None
    callback_url: object = None
    callback_timeout: object = None
    tgt_type: object = "glob"
    returner: object = None
    raw: str | None = None

    @classmethod
    def from_command_line(cls, line, parse_cli_args, **fields):
        """The request for one raw command line (``"cmd.run 'ls -l'"``), typed
        by ``parse_cli_args(tokens) -> (arg, kwarg)`` as the salt CLI does."""
        fun, tokens = validation.split_raw_command(line)
        arg, kwarg = parse_cli_args(tokens)
        return cls(command=fun, arg=arg, kwarg=kwarg, raw=line, **fields)
