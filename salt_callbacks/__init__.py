"""salt-callbacks: signed webhooks when Salt jobs finish or time out.

Where things live (a change usually touches one of these)::

    webhook/    payload bodies and their signatures (what goes on the wire)
    model/      callback records and their state machine, retries, validation
    delivery/   the engine and its parts: scheduler, dispatcher, lookups,
                writer, sweeper, transport, address guard
    store/      where records live (salt.cache today)
    ha/         several masters: claims and coordinators
    service/    the use cases behind salt-run and the HTTP API
    api/        the HTTP API of AutoPi's routes (salt-api module callbacks_api)
    keys/       signing keys: configured secrets, sdb, sealed caller tokens
    adapters/   the only modules that import Salt, one per Salt facility
    factory.py  builds every part from master opts; main.py runs the processes
    events.py   every bus tag; config.py, exceptions.py, redact.py

The Salt modules in ``_engines/``, ``_runners/``, ``_returners/`` and
``_netapi/`` are thin adapters over ``factory`` and ``main``.
"""

__version__ = "0.1.0"
