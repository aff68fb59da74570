"""What each scenario costs: the CPU split by role, the quiet-machine wait
before a scenario, the engine's own calm-down, and its RSS."""

import os
import time

from tools.bench import say


class CpuMeter:
    """Cores used per role over a span, and by processes outside the bench ("background")."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._start = None
        self.seconds = {}  # role -> CPU seconds over the span (set by stop): unrounded, for per-webhook costs

    def _snapshot(self):
        import psutil  # pylint: disable=import-outside-toplevel

        roles = {}
        if self.ctx.master is not None:
            roles.update(self.ctx.master.proc_roles())
        if self.ctx.receiver is not None:
            roles[self.ctx.receiver.pid] = "receiver"
        if self.ctx.pool is not None:
            for pid in self.ctx.pool.pids():
                roles[pid] = "injectors"
        roles.update(self.ctx.extra_pids)
        mine = {os.getpid()}
        try:
            mine.update(c.pid for c in psutil.Process().children(recursive=True))
        except psutil.Error:
            pass
        per = {}
        for pid in mine | set(roles):
            try:
                t = psutil.Process(pid).cpu_times()
                per[pid] = t.user + t.system
            except psutil.Error:
                continue
        sys_t = psutil.cpu_times()
        busy = sum(getattr(sys_t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        return time.time(), busy, per, roles

    def start(self):
        self._start = self._snapshot()
        return self

    def stop(self):
        t1, busy1, per1, roles = self._snapshot()
        t0, busy0, per0, _ = self._start
        wall = max(1e-9, t1 - t0)
        used = {}
        ours = 0.0
        for pid, cpu in per1.items():
            delta = cpu - per0.get(pid, 0.0)
            ours += delta
            role = roles.get(pid, "bench")
            used[role] = used.get(role, 0.0) + delta
        self.seconds = dict(used)
        result = {role: round(v / wall, 2) for role, v in sorted(used.items())}
        result["background"] = round(max(0.0, (busy1 - busy0) - ours) / wall, 2)
        result["wall_s"] = round(wall, 1)
        return result


def wait_for_quiet_machine(ctx, name):
    """Before a scenario: wait (at most --quiet-wait s) until processes outside
    the bench use < --quiet-cores cores, so their load does not distort it."""
    limit, threshold = ctx.args.quiet_wait, ctx.args.quiet_cores
    if limit <= 0:
        return
    started, level = time.time(), None
    while True:
        meter = CpuMeter(ctx).start()
        time.sleep(1.0)
        level = meter.stop()["background"]
        if level < threshold or time.time() - started >= limit:
            break
    waited = time.time() - started
    ctx.results.setdefault("quiet_waits", {})[name] = {"waited_s": round(waited, 1), "background": level}
    if level >= threshold:
        say(f"  (machine still busy before {name}: {level:.2f} cores used outside the bench after {waited:.0f} s)")
    elif waited > 1.5:
        say(f"  (waited {waited:.0f} s for other processes on the machine to calm down)")


def wait_quiet(ctx, timeout):
    """Wait until the engine uses < 15 % of a core for 0.5 s (or ``timeout``):
    the previous scenario's backlog is done (an idle engine uses ~1 %)."""
    proc = ctx.master.engine_proc()
    if proc is None:
        return
    deadline = time.time() + timeout
    proc.cpu_percent(None)
    while time.time() < deadline:
        time.sleep(0.5)
        if proc.cpu_percent(None) < 15:
            return


def engine_rss_mb(ctx):
    proc = ctx.master.engine_proc()
    return proc.memory_info().rss / 2**20 if proc else None
