"""Who is calling (``Caller``) and what of a record they may read (``RecordAccess``).

A caller is one of:

* a **system** user running ``salt-run`` on the master itself (``alice``, or
  ``sudo_alice`` for alice through sudo). Salt's ``publisher_acl`` and
  ``sudo_acl`` say what they may run;
* an **eauth** user (``pam:alice``): authenticated by one of the master's
  ``external_auth`` backends, through salt-api, ``salt-run -a`` or the HTTP
  API. Only that backend's entries count. The HTTP API knows the backend
  (it is in the caller's token); a runner called through the master does not
  (Salt passes it the user name only), so there ``backends`` holds every
  backend that grants this name ``@runner`` rights and a right must hold
  under all of them.

``principal`` names a caller the way ``callbacks: admins`` and a record's
``creator`` do: ``alice`` for a system user, ``pam:alice`` for an eauth user.
No name is special for an eauth caller: an eauth user called ``root`` is not
the system user root.

Visibility (one place, used by the runner, the HTTP API and the UI): a record
is shown in full to its creator and to admins; anyone else with a right on
the device sees it without the command's arguments (``command.arg``,
``command.kwarg``, ``command.raw``), without the receivers' response excerpts,
and with the URL cut down to scheme, host, port and path. A record made
before records carried a creator (or registered from job metadata, whose
publisher's backend is not known) has no creator: only admins see it in full.
"""

import dataclasses
import urllib.parse

SYSTEM = "system"
EAUTH = "eauth"
#: Keys of ``command`` only the creator and admins see.
PRIVATE_COMMAND_KEYS = ("arg", "kwarg", "raw")
SUDO_PREFIX = "sudo_"


class VisibleDevices:
    """``device -> bool`` for the devices a caller may see, with the set itself
    in ``devices`` (None: every device), so a listing can ask the store for
    those devices only instead of reading every record to drop the rest."""

    __slots__ = ("devices",)

    def __init__(self, devices=None):
        self.devices = None if devices is None else frozenset(devices)

    def __call__(self, device):
        return self.devices is None or device in self.devices

    def __and__(self, other):
        if self.devices is None:
            return other
        if other.devices is None:
            return self
        return VisibleDevices(self.devices & other.devices)


EVERY_DEVICE = VisibleDevices()
NO_DEVICE = VisibleDevices(())


@dataclasses.dataclass(frozen=True)
class Caller:
    name: str
    kind: str = SYSTEM
    backends: tuple = ()  # eauth: the backend that authenticated them (or the candidates, see above)
    groups: tuple = ()  # eauth: the groups the backend reported (from the token), for ``name%`` entries

    @classmethod
    def system(cls, name):
        return cls(name=str(name), kind=SYSTEM)

    @classmethod
    def eauth(cls, name, backend, groups=()):
        return cls(name=str(name), kind=EAUTH, backends=(str(backend),), groups=tuple(groups or ()))

    @property
    def is_eauth(self):
        return self.kind == EAUTH

    @property
    def sudo_user(self):
        """For ``sudo_alice`` (a system user through sudo): ``alice``; else None."""
        if self.kind == SYSTEM and self.name.startswith(SUDO_PREFIX) and len(self.name) > len(SUDO_PREFIX):
            return self.name[len(SUDO_PREFIX):]
        return None

    @property
    def principal(self):
        if self.kind == SYSTEM:
            return self.name
        return f"{'|'.join(self.backends) or '?'}:{self.name}"

    def __str__(self):
        return self.principal


def as_caller(user):
    """A ``Caller`` as given, or a plain name (in-process Python) as a system user."""
    return user if isinstance(user, Caller) else Caller.system(user if user is not None else "UNKNOWN")


def parse_admins(entries):
    """``callbacks: admins`` as ``(system names, {(backend, name)})``."""
    system, eauth = set(), set()
    for entry in entries:
        backend, sep, name = entry.partition(":")
        if sep:
            eauth.add((backend, name))
        else:
            system.add(entry)
    return frozenset(system), frozenset(eauth)


class RecordAccess:
    """Decides how much of a record a caller sees. ``trusted``: every caller
    sees everything (in-process Python with no permissions to check)."""

    def __init__(self, admins=(), trusted=False):
        self._system_admins, self._eauth_admins = parse_admins(admins)
        self._trusted = trusted

    def is_admin(self, caller):
        caller = as_caller(caller)
        if caller.kind == SYSTEM:
            return caller.name in self._system_admins
        # A runner caller whose backend is not known is an admin only if it is one under every candidate.
        return bool(caller.backends) and all((b, caller.name) in self._eauth_admins for b in caller.backends)

    def sees_in_full(self, caller, record):
        if self._trusted:
            return True
        caller = as_caller(caller)
        creator = getattr(record, "creator", None)
        return self.is_admin(caller) or (creator is not None and creator == caller.principal)

    def view(self, caller, record, retention=None):
        """The record as ``caller`` may read it (``Record.public_view``, redacted when not theirs)."""
        view = record.public_view(retention)
        return view if self.sees_in_full(caller, record) else redacted_view(view)


def redacted_view(view):
    """``view`` without what only the creator and admins see (the keys absent)."""
    view = dict(view)
    url, bare = view.get("url"), bare_url(view.get("url"))
    view["command"] = {k: v for k, v in view.get("command", {}).items() if k not in PRIVATE_COMMAND_KEYS}
    view["sent_requests"] = [_scrubbed({k: v for k, v in entry.items() if k != "response_excerpt"}, "error", url, bare)
                             for entry in view.get("sent_requests", [])]
    view["deliveries"] = [_scrubbed(dict(d), "reason", url, bare) for d in view.get("deliveries", [])]
    view["url"] = bare
    return view


def _scrubbed(entry, key, url, bare):
    # An error text may quote the URL it failed on (a client library's message): never its secrets.
    text = entry.get(key)
    if isinstance(text, str) and isinstance(url, str) and url and url != bare and url in text:
        entry[key] = text.replace(url, bare or "<url>")
    return entry


def bare_url(url):
    """Scheme, host, port and path of ``url``: no userinfo, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except (TypeError, ValueError):
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
