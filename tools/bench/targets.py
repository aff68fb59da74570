"""The performance issue's targets (#13, items 2 and 3; the soak of #15 item 6),
each judged from the results JSON alone: ``rows(results)`` gives
``(target, measured, met)`` with ``met`` one of ``met``, ``MISSED`` or ``n/a``
(not measured, or measured at sizes too small to judge: ``--quick``).

The definitions, as the issue words them:

- throughput: at least 80 % of the lower ceiling (bus, HTTP), in both injection modes;
- engine / Reactor: at least 50x, or 80 % of what the ceilings allow (the
  lower ceiling over the Reactor's rate);
- added latency: the engine's p99 minus the bare bus subscriber's p99 at the
  same rate, at half the bus ceiling, under 5 ms;
- TIMEOUT lateness p99 under 100 ms with 100,000 pending and 1,000/s due;
- engine RSS under 120 MB with 100,000 pending;
- ``callbacks.get`` under 5 ms and every ``callbacks.list`` form under 50 ms
  with 100,000 records, in process;
- during a sweep of 100,000 expired records, delivery's added latency within
  its target;
- engine CPU per delivered webhook (engine process CPU time over webhooks
  delivered in the throughput run) at most 300 us;
- soak: no webhook lost.
"""

MET, MISSED, NA = "met", "MISSED", "n/a"
HEADER = ("target (issue 13)", "measured", "met?")

ADDED_LATENCY_MS = 5.0
CPU_US = 300.0
FULL_SIZE = 100000


def judge(ok):
    return NA if ok is None else (MET if ok else MISSED)


def fmt(value, digits=0, unit=""):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def lower_ceiling(s, mode):
    """``(rate, which)`` of the lower of the bus and HTTP ceilings for ``mode``."""
    bus = s.get("ceiling_bus", {}).get(mode, {}).get("rate")
    http = s.get("ceiling_http", {}).get("rate")
    found = [(v, name) for v, name in ((bus, "bus"), (http, "http")) if v]
    return min(found) if found else (None, None)


def added_latency(engine_run, bus_run):
    """``(added p99 ms, engine p99, bus p99, rate)``, or Nones when either is missing."""
    e99 = (engine_run or {}).get("latency", {}).get("p99_ms")
    b99 = (bus_run or {}).get("latency", {}).get("p99_ms")
    if e99 is None or b99 is None:
        return None, e99, b99, (engine_run or {}).get("target_rate")
    return e99 - b99, e99, b99, engine_run.get("target_rate")


def _throughput(s, mode):
    rate = s.get(f"engine_tput_{mode}", {}).get("rate")
    ceiling, which = lower_ceiling(s, mode)
    if rate is None or ceiling is None:
        return (f"throughput >= 80% of the lower ceiling, {mode} injection", fmt(rate, 0, "/s"), NA)
    share = rate / ceiling
    return (f"throughput >= 80% of the lower ceiling, {mode} injection",
            f"{fmt(rate)}/s = {share * 100:.0f}% of {fmt(ceiling)}/s ({which})", judge(share >= 0.8))


def _reactor(s):
    rate = s.get("engine_tput_event", {}).get("rate")
    base = s.get("baseline_tput", {}).get("rate")
    ceiling, _ = lower_ceiling(s, "event")
    what = "engine / Reactor >= 50x, or >= 80% of what the ceilings allow"
    if not rate or not base:
        return (what, "-", NA)
    ratio = rate / base
    allowed = ceiling / base if ceiling else None
    ok = ratio >= 50 or (allowed is not None and ratio >= 0.8 * allowed)
    return (what, f"{ratio:.1f}x (ceilings allow {fmt(allowed, 1)}x; Reactor {base:.1f}/s)", judge(ok))


def _added_latency(s, scenario, what, bus_key="latency"):
    run = s.get(scenario, {})
    added, e99, b99, rate = added_latency(run, s.get("ceiling_bus", {}).get(bus_key))
    if added is None:
        return (what, "-", NA)
    half = s.get("ceiling_bus", {}).get("event", {}).get("rate")
    at_half = bool(half and rate and rate >= 0.45 * half)
    kept_up = run.get("lost", 1) == 0 and (run.get("offered_rate") or 0) >= 0.95 * (rate or 0)
    text = f"{added:,.2f} ms (engine p99 {e99:,.2f} - bus p99 {b99:,.2f}) at {fmt(rate)}/s"
    if not at_half:
        text += f" (not half the bus ceiling {fmt(half)}/s)"
    if not kept_up:
        text += f"; offered {fmt(run.get('offered_rate'))}/s, lost {fmt(run.get('lost'))}"
    return (what, text, judge(None if not at_half else (added < ADDED_LATENCY_MS and kept_up)))


def _pending(s, cfg):
    pend = s.get("pending", {})
    full = (pend.get("pending") or 0) >= FULL_SIZE
    lp99 = pend.get("lateness", {}).get("p99_ms")
    due_ok = (pend.get("due_rate") or 0) >= 1000
    late = ("TIMEOUT lateness p99 < 100 ms, 100k pending, 1,000/s due",
            fmt(lp99, 1, " ms") + (f" ({fmt(pend.get('pending'))} pending, {fmt(pend.get('due_rate'))}/s due)"
                                   if pend else "") + (f", {pend['missing']} never came" if pend.get("missing") else ""),
            judge(None if lp99 is None or not (full and due_ok) else (lp99 < 100 and not pend.get("missing"))))
    rss = pend.get("rss_pending_mb")
    mem = ("engine RSS < 120 MB with 100k pending", fmt(rss, 1, " MB") + (
        f" ({fmt(pend.get('pending'))} pending)" if pend else ""), judge(None if rss is None or not full else rss < 120))
    return [late, mem]


LIST_FORMS = (("list", "no filter"), ("list_device", "device"), ("list_timeout_10", "state"),
              ("list_executed_10_nomatch", "state matching nothing"))


def _store(s):
    st = s.get("store", {})
    full = (st.get("records") or 0) >= FULL_SIZE
    get = st.get("get", {}).get("median_ms")
    rows = [("callbacks.get < 5 ms, 100k records", fmt(get, 1, " ms"), judge(None if get is None or not full
                                                                             else get < 5))]
    forms = [(label, st.get(key, {}).get("median_ms")) for key, label in LIST_FORMS]
    measured = [(label, v) for label, v in forms if v is not None]
    if measured:
        worst = max(measured, key=lambda kv: kv[1])
        text = ", ".join(f"{label} {v:,.1f}" for label, v in measured) + " ms"
        ok = None if not full else (worst[1] < 50 and len(measured) == len(forms))
    else:
        text, ok = "-", None
    rows.append(("every callbacks.list form < 50 ms, 100k records", text, judge(ok)))
    return rows


def _sweep(s):
    sw = s.get("sweep", {})
    what = "delivery added latency < 5 ms during a sweep of 100k expired records"
    if not sw:
        return (what, "-", NA)
    added, e99, b99, rate = added_latency(sw, s.get("ceiling_bus", {}).get("latency"))
    if added is None:
        return (what, "-", NA)
    full = (sw.get("expired") or 0) >= FULL_SIZE
    swept = sw.get("swept_during_window")
    text = (f"{added:,.2f} ms (p99 {e99:,.2f} - bus {b99:,.2f}) at {fmt(rate)}/s, {fmt(sw.get('expired'))} "
            f"expired, {fmt(swept)} swept in the window")
    return (what, text, judge(None if not full else (added < ADDED_LATENCY_MS and sw.get("lost", 1) == 0
                                                     and bool(swept))))


def _cpu(s):
    run = s.get("engine_tput_event", {})
    us = run.get("engine_cpu_us_per_webhook")
    sj = s.get("engine_tput_store_job", {}).get("engine_cpu_us_per_webhook")
    text = fmt(us, 0, " µs") + (f" (store_job run: {fmt(sj, 0, ' µs')})" if sj is not None else "")
    return ("engine CPU per delivered webhook <= 300 µs (event throughput run)", text,
            judge(None if us is None else us <= CPU_US))


def _soak(s):
    soak = s.get("soak", {})
    if not soak:
        return ("soak: no webhook lost (a receiver failing 1 in 10)", "-", NA)
    lost = soak.get("lost")
    return ("soak: no webhook lost (a receiver failing 1 in 10)",
            f"{fmt(lost)} lost of {fmt(soak.get('returns'))} over {fmt(soak.get('minutes'), 1)} min",
            judge(None if lost is None else lost == 0))


def rows(results):
    s, cfg = results.get("scenarios", {}), results.get("config", {})
    out = [_throughput(s, "store_job"), _throughput(s, "event"), _reactor(s),
           _added_latency(s, "engine_latency", "added latency p99 < 5 ms at half the bus ceiling"),
           *_pending(s, cfg), *_store(s), _sweep(s), _cpu(s), _soak(s)]
    return out


def counts(table):
    met = sum(1 for r in table if r[2] == MET)
    missed = sum(1 for r in table if r[2] == MISSED)
    return met, missed, len(table) - met - missed
