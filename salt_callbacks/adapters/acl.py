"""The caller's rights, checked with Salt's own ACL rules and matcher."""

import salt.utils.args
import salt.utils.minions


class SaltPermissions:
    """The caller's own rights, checked the way the master checks a publish.

    A job a runner publishes runs with the master's rights, so the runner must
    check the caller itself. The rules are Salt's: ``publisher_acl`` for
    system users and ``external_auth`` for eauth users, matched with
    ``CkMinions.fill_auth_list`` and ``auth_check``. The master's own user,
    root, ``sudo_*`` users (root through sudo, as the master treats them) and
    in-process callers (``UNKNOWN``) are unrestricted, as on a direct publish.
    The runner cannot tell which eauth backend authenticated the caller, so
    the user's entries under every backend count; group (``name%``) entries
    are not expanded.
    """

    def __init__(self, opts):
        self.opts = opts
        self._ck = salt.utils.minions.CkMinions(opts)

    def unrestricted(self, user):
        return user in ("root", "UNKNOWN", self.opts.get("user", "root")) or user.startswith("sudo_")

    def auth_list(self, user):
        entries = []
        self._ck.fill_auth_list(self.opts.get("publisher_acl") or {}, user, [], entries)
        for users in (self.opts.get("external_auth") or {}).values():
            if isinstance(users, dict):
                self._ck.fill_auth_list(users, user, [], entries)
        # @runner / @wheel grants are about calling runners, not minions.
        return [
            e for e in entries
            if not (isinstance(e, str) and e.startswith("@"))
            and not (isinstance(e, dict) and any(str(k).startswith("@") for k in e))
        ]

    def may_run(self, user, fun, arg, kwarg, tgt, tgt_type, minions):
        if self.unrestricted(user):
            return True
        return self._ck.auth_check(
            self.auth_list(user),
            fun,
            salt.utils.args.condition_input(list(arg), dict(kwarg)),
            tgt,
            tgt_type,
            minions=list(minions),
        )

    def visible_devices(self, user):
        """``device -> bool``: the devices whose records ``user`` may see,
        those the user may run at least one function on."""
        if self.unrestricted(user):
            return lambda device: True
        allowed, anywhere = set(), False
        for entry in self.auth_list(user):
            if isinstance(entry, str):
                anywhere = True
            elif isinstance(entry, dict) and len(entry) == 1:
                target = next(iter(entry))
                allowed.update(self._ck.check_minions(target, "compound").get("minions", []))
        return (lambda device: True) if anywhere else allowed.__contains__
