"""salt-callbacks: signed webhooks when Salt jobs finish or time out.

The package is the Salt-free core (payloads, signing, records, retries, the
store, the engine). ``saltio`` and ``factory`` are the only modules that
import Salt; the Salt modules in ``_engines/``, ``_runners/`` and
``_returners/`` are thin adapters over ``factory``.
"""

__version__ = "0.1.0"
