"""Salt's sdb, for ``sdb://`` secrets under ``callbacks:secrets``."""


def sdb_fetcher(opts):
    """``uri -> value`` through Salt's sdb, with the loader built once."""
    import salt.loader  # pylint: disable=import-outside-toplevel
    import salt.utils.sdb  # pylint: disable=import-outside-toplevel

    utils = None

    def fetch(uri):
        nonlocal utils
        if utils is None:
            utils = salt.loader.utils(opts)
        return salt.utils.sdb.sdb_get(uri, opts, utils=utils, strict=True)

    return fetch
