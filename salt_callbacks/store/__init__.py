"""Where callback records live between events, restarts and masters.

The engine, the runner and the HTTP API use one store interface: ``add_job``,
``index_job``, ``job``, ``jids``, ``expired_jobs``, ``remove_job``, ``get``,
``save``, ``delete``, ``devices``, ``device_jids``, ``records_of_job`` and
``recent``. Every method raises ``StoreError`` when the backend fails.

``SaltCacheStore`` keeps them in any ``salt.cache`` driver (localfs by
default, redis for several masters).
"""

from salt_callbacks.store.salt_cache import SaltCacheStore

__all__ = ["SaltCacheStore"]
