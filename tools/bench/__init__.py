"""Benchmark of the callbacks engine on a real salt-master: ``make bench``.

Starts what it needs under ``.bench/`` (wiped at start): a fast loopback
webhook receiver (the harness's aiohttp receiver in its own process, plus a
"black hole" port that accepts connections and never answers), salt-masters
as the current user on free ports, and a pool of injector processes. Then it
measures, prints ONE table on stdout (progress goes to stderr) and writes
the results as JSON (``--json``, default ``.bench/results.json``) and the
results page generated from that JSON (``--page``, default beside it with
``.md``). ``make bench`` writes ``docs/results.json`` and ``docs/results.md``;
``make results`` regenerates the page from the JSON without a run.

The modules, by what they do: ``cli`` (flags, the run, the JSON),
``scenarios/`` (one module per group of scenarios), ``injectors`` (the
processes that load the bus and the store), ``clients`` (the ceilings'
stand-ins for the engine), ``masters`` (a bench master on the harness),
``meter`` (CPU split, quiet-machine wait, RSS), ``profile`` (py-spy),
``stats`` (percentiles, medians of repeated runs), ``report`` (the table
and the results page). The receiver is the harness's
(``tests/support/receivers.py``).

What is measured, and how (one scenario each):

ceiling/http    a bare aiohttp client (own process, ``--http-concurrency``
                connections) posts the same signed COMMAND_EXECUTED bodies
                (``payload.encode_executed`` + ``signing.signed_headers``) to
                the same receiver.
ceiling/bus     a master with no engine and no Reactor; a subscriber process
                (``get_master_event(listen=True)`` + ``set_event_handler``, the
                API the engine uses) counts ``salt/job/*/ret/*`` events while
                the same injectors send the same load.
engine/tput     closed loop: the injectors keep at most ``--window`` returns
                outstanding (injected, not yet received) so the bus never cuts
                the engine off; deliveries/s is taken over the 10-90 % span of
                receiver arrivals. Run twice: ``store_job`` injection (the
                issue's definition) and ``event`` injection (see below).
engine/latency  open loop at ``--rate`` returns/s for ``--latency-seconds``;
                latency = receiver arrival - the ret event's ``_stamp`` (set by
                Salt's ``fire_event`` as the event enters the bus).
engine/hole     the same, with ``--hole-share`` of the returns aimed at a
                receiver that never answers; p99 of the healthy ones.
engine/burst    ``--burst`` returns fired as fast as the injectors can (event
                injection; the jobs were announced and their returns written to
                the master job cache beforehand); lost = no COMMAND_EXECUTED
                within the wait.
pending         ``--pending`` records, most with far deadlines, written into
                the store with the master stopped, resumed by a restart (resume
                time, RSS); then ``--due-rate`` x ``--due-seconds`` more records
                announced with ``salt/job/<jid>/new`` whose deadlines fall due
                at ``--due-rate``/s; lateness = TIMEOUT arrival - deadline.
                Engine RSS (psutil) before any record and with all pending.
profiles        ``--profile tput,pending,burst``: py-spy (``--idle``) on the
                engine's main thread, summarised as shares of wall time.
store           ``callbacks.get`` / ``callbacks.list``, the runner functions
                called in the bench's process (``salt.loader.runner`` with
                salt-run's opts: a system caller who sees every record), with
                the pending records present.
baseline        a master with the Reactor on ``salt/job/*/ret/*`` calling the
                ``http.query`` runner: the same store_job load (smaller: it
                manages tens of webhooks/s) and the same burst.

Before each scenario the bench waits up to ``--quiet-wait`` s for processes
outside it to go quiet; each scenario's CPU split (engine, bus, injectors,
receiver, ..., and "background": everything outside the bench) is in the JSON.
The headline figures (the ceilings, both throughput runs, both latency runs
and the baseline's throughput) are medians of ``--repeat`` runs: the run
with the median figure is reported, every run is kept in the JSON and the
page shows their spread.

Injection modes (both go through Salt's own APIs, both put the same event on
the same bus):

store_job  each return: ``salt.utils.job.store_job(opts, load, event=ev,
           mminion=mm)`` with a sync master event, as an MWorker does. The
           job's load was saved beforehand (``local_cache.prep_jid`` +
           ``save_load`` with its minion), as publishing does. Costs ~2 ms of
           CPU per return in Salt itself (fsync + a thread per fire_event).
event      the ret event only, via ``fire_event_async`` with
           ``master_async_mworker`` (Salt's async MWorker publish path, no
           thread per event). The latency runs and the burst write each
           return into the master job cache beforehand (prep_jid, save_load,
           returner: what store_job leaves there), so an engine the bus cuts
           off can catch up; the closed-loop throughput run writes none (its
           window keeps the bus from cutting anyone off). Used where store_job
           cannot offer the load on this machine: the rate scenarios, the
           burst and the engine capacity row.

Each job targets one device (``<scenario>-<n>``) and is announced with a
``salt/job/<jid>/new`` event before its return, as the master does when it
publishes. Every wait is bounded.
"""

import multiprocessing
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / ".bench"
BIN = Path(sys.executable).parent
SPAWN = multiprocessing.get_context("spawn")


def say(text):
    """Progress, on stderr (stdout carries only the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
