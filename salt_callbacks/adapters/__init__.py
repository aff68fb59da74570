"""Salt adapters: the only modules of the package that import Salt.

One module per Salt facility: ``bus`` (the master event bus), ``cache``
(``salt.cache`` and its localfs fast path), ``acl`` (the caller's rights),
``publish`` (LocalClient jobs and one-off events), ``jobcache`` (the master
job cache), ``eauth`` (Salt's token store and login), ``sdb``, ``redis``
(client settings) and ``cli`` (the salt CLI's argument typing). Everything
else imports without Salt, and ``tests/unit/test_core_is_salt_free.py``
keeps it that way.
"""
