"""The caller's rights, checked with Salt's own ACL rules and matcher.

A job a runner publishes runs with the master's rights, so the runner (and
the HTTP API) must check the caller itself. The rules are the master's own
for a publish, by who the caller is (``service.access.Caller``):

* an **eauth** caller: the entries of the backend that authenticated them,
  under ``external_auth:<backend>`` (their name, a matching pattern, their
  groups' ``name%`` entries, or ``*``), matched with ``CkMinions.auth_check``.
  No name is special: ``root``, ``sudo_x``, ``UNKNOWN`` or the master's user,
  as eauth users, have exactly their entries. When the backend is not known
  (a runner called through the master) every candidate backend's entries
  must allow it.
* a **system** user on the master (``salt-run`` without ``-a``): root and
  the master's user are unrestricted; ``sudo_<user>`` is unrestricted unless
  ``sudo_acl`` is on (with a ``publisher_acl``), then it has ``<user>``'s
  ``publisher_acl`` entries; any other user has their ``publisher_acl``
  entries. ``UNKNOWN`` (an in-process caller of the salt-run process, such as
  an orchestration it runs) is unrestricted, as the process holds the
  master's key anyway.

``publisher_acl_blacklist`` applies to every caller, as on a publish.
"""

import salt.acl
import salt.utils.args
import salt.utils.master
import salt.utils.minions

from salt_callbacks.service.access import EAUTH, EVERY_DEVICE, NO_DEVICE, Caller, VisibleDevices, as_caller

UNRESTRICTED = None


class SaltPermissions:
    def __init__(self, opts):
        self.opts = opts
        self._ck = salt.utils.minions.CkMinions(opts)
        self._blacklist = salt.acl.PublisherACL(opts.get("publisher_acl_blacklist") or {})

    # -- the caller's entries --------------------------------------------------

    def grants(self, caller):
        """``None`` (unrestricted) or a list of auth lists, every one of which
        must allow an action (one per backend that may have authenticated the
        caller; an empty list allows nothing)."""
        caller = as_caller(caller)
        if caller.kind == EAUTH:
            providers = self.opts.get("external_auth") or {}
            lists = []
            for backend in caller.backends:
                users = _users(providers.get(backend))
                entries = self._ck.fill_auth_list(users, caller.name, list(caller.groups))
                lists.append(_minion_entries(entries))
            return lists
        if caller.name in ("root", "UNKNOWN", self.opts.get("user", "root")):
            return UNRESTRICTED
        publisher_acl = self.opts.get("publisher_acl") or {}
        name = caller.name
        if caller.sudo_user is not None:
            if not (self.opts.get("sudo_acl") and publisher_acl):
                return UNRESTRICTED
            name = caller.sudo_user
        return [_minion_entries(salt.utils.master.get_values_of_matching_keys(publisher_acl, name))]

    def _blacklisted(self, caller, fun=None):
        names = {caller.name} | ({caller.sudo_user} if caller.sudo_user else set())
        if any(self._blacklist.user_is_blacklisted(n) for n in names):
            return True
        return fun is not None and bool(self._blacklist.cmd_is_blacklisted(fun))

    # -- checks ------------------------------------------------------------------

    def may_run(self, caller, fun, arg, kwarg, tgt, tgt_type, minions):
        caller = as_caller(caller)
        if self._blacklisted(caller, fun):
            return False
        grants = self.grants(caller)
        if grants is UNRESTRICTED:
            return True
        args = salt.utils.args.condition_input(list(arg), dict(kwarg))
        return bool(grants) and all(
            entries and self._ck.auth_check(entries, fun, args, tgt, tgt_type, minions=list(minions))
            for entries in grants
        )

    def visible_devices(self, caller):
        """``VisibleDevices``: the devices whose records ``caller`` may see,
        those the caller may run at least one function on (callable as
        ``device -> bool``; its ``devices`` is the set, or None for all)."""
        caller = as_caller(caller)
        if self._blacklisted(caller):
            return NO_DEVICE
        grants = self.grants(caller)
        if grants is UNRESTRICTED:
            return EVERY_DEVICE
        if not grants:
            return NO_DEVICE
        visible = EVERY_DEVICE
        for entries in grants:
            visible = visible & self._devices(entries)
        return visible

    def _devices(self, entries):
        allowed = set()
        for entry in entries:
            if isinstance(entry, str):
                return EVERY_DEVICE  # a function on every minion
            if isinstance(entry, dict) and len(entry) == 1:
                target = next(iter(entry))
                allowed.update(self._ck.check_minions(target, "compound").get("minions", []))
        return VisibleDevices(allowed)


def _users(provider):
    """A backend's user entries: ``^key`` entries are the backend's own settings (``^filename``)."""
    if not isinstance(provider, dict):
        return {}
    return {k: v for k, v in provider.items() if not str(k).startswith("^") and isinstance(v, list)}


def _minion_entries(entries):
    # @runner / @wheel grants are about calling runners, not minions.
    return [
        e for e in entries
        if not (isinstance(e, str) and e.startswith("@"))
        and not (isinstance(e, dict) and any(str(k).startswith("@") for k in e))
    ]


def _runner_backends(opts, name):
    """The eauth backends under which ``name`` has ``@runner`` rights: those
    that may have authenticated a runner call by ``name`` (over-counting is
    safe: each one's entries must allow the action)."""
    ck = salt.utils.minions.CkMinions(opts)
    found = []
    for backend, users in (opts.get("external_auth") or {}).items():
        for entry in ck.fill_auth_list(_users(users), name, []):
            keys = [entry] if isinstance(entry, str) else list(entry) if isinstance(entry, dict) else []
            if any(str(k).startswith("@runner") for k in keys):
                found.append(str(backend))
                break
    return tuple(sorted(found))


def runner_caller(opts, user):
    """The ``Caller`` of a runner function, from the runner's ``__opts__`` and ``__user__``.

    ``salt-run`` without ``-a`` runs the function in its own process, with the
    command line's options in ``opts`` (``fun`` set, ``eauth`` empty): the
    caller is the system user who ran it (``sudo_<user>`` through sudo). A
    runner the master runs for a request (salt-api, ``salt-run -a``) has the
    master's own opts and the eauth user's name, and Salt does not say which
    backend authenticated them.
    """
    name = user or "UNKNOWN"
    if opts.get("fun") and not opts.get("eauth"):
        return Caller.system(name)
    return Caller(name=name, kind=EAUTH, backends=_runner_backends(opts, name))
