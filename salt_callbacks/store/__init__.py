"""Where callback records live between events, restarts and masters.

The engine, the runner and the HTTP API use one store interface: ``add_job``,
``index_job``, ``job``, ``jids``, ``expired_jobs``, ``remove_job``,
``remove_jobs``, ``get``, ``save``, ``save_many``, ``delete``, ``devices``,
``device_jids``, ``records_of_job``, ``recent`` (optionally by public
``state``), ``unfinished_jobs`` and ``count_unfinished``. Every method raises
``StoreError`` when the backend fails.

``EmbeddedStore`` keeps them in one SQLite file (the default on one master);
``SaltCacheStore`` in any ``salt.cache`` driver (localfs, or redis for several
masters). ``upgrade`` imports an older store's records into the embedded one.
"""

from salt_callbacks.store import upgrade
from salt_callbacks.store.embedded import EmbeddedStore
from salt_callbacks.store.salt_cache import SaltCacheStore

__all__ = ["EmbeddedStore", "SaltCacheStore", "upgrade"]
