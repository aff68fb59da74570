"""``--profile``: py-spy on the engine's main thread during a scenario,
summarised as shares of wall time (``--idle``: the engine is one asyncio
loop, so the share idle in epoll says how much of the loop is free)."""

import subprocess

from tools.bench import BENCH, BIN, say


def start_profile(ctx, seconds, name):
    if name.split("_")[0] not in ctx.args.profile:
        return
    pyspy = BIN / "py-spy"
    proc = ctx.master.engine_proc()
    if not pyspy.exists() or proc is None:
        ctx.note("--profile: py-spy not installed in the venv (pip install py-spy) or no engine process")
        return
    out = BENCH / f"engine-profile-{name}.txt"
    cpu_out = BENCH / f"engine-cpu-profile-{name}.txt"
    # --idle: wall-clock shares (idle in epoll included) say what holds the
    # loop; --nonblocking: do not pause it. The second one, without --idle,
    # samples only threads on the CPU: where the engine's CPU goes, all threads.
    common = ["--nonblocking", "-d", str(int(seconds)), "-f", "raw", "-p", str(proc.pid)]
    procs = [subprocess.Popen([str(pyspy), "record", "--idle", "-r", "100", "-o", str(out), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([str(pyspy), "record", "-r", "200", "-o", str(cpu_out), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    ctx.profile = (procs, out, cpu_out, name)


def _frame_name(frame):
    return frame.split(" (", 1)[0]


def _category(frames):
    """What a sample of the engine's loop is doing, named by the innermost frame that says it."""
    for frame in reversed(frames):
        name = _frame_name(frame)
        if "PublishServer.publish" in frame or "SyncWrapper" in frame:
            return "Salt fire_event: PublishServer.publish via SyncWrapper (a thread per event)"
        if "salt_callbacks/" in frame and "run_engine" not in frame and "_call (" not in frame:
            return f"{name} (salt_callbacks)"
        if "salt/cache/" in frame:
            continue  # attribute to the salt_callbacks caller
        if "aiohttp/" in frame and "salt_callbacks" not in frame:
            continue
    return _frame_name(frames[-1])


def finish_profile(ctx):
    if ctx.profile is None:
        return
    procs, out, cpu_out, name = ctx.profile
    ctx.profile = None
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(5)
    _summarise_cpu(ctx, cpu_out, name)
    if not out.exists():
        ctx.note(f"py-spy wrote no profile for {name}")
        return
    leaf, engine_frames, samples, idle, helper = {}, {}, 0, 0, 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        if not any("run_engine" in f for f in frames):
            helper += count  # Salt's helper threads (a thread per published event, resolvers)
            continue
        samples += count
        if "select (selectors.py" in frames[-1]:
            idle += count
            continue
        key = f"{_frame_name(frames[-1])}  ({frames[-1].rsplit('(', 1)[-1].rstrip(')')})"
        leaf[key] = leaf.get(key, 0) + count
        cat = _category(frames)
        engine_frames[cat] = engine_frames.get(cat, 0) + count

    def share(count):
        return round(100.0 * count / max(1, samples), 1)

    prof = ctx.results.setdefault("profiles", {})[name] = {
        "scenario": name, "file": str(out), "main_thread_samples": samples, "helper_thread_samples": helper,
        "idle_in_epoll_pct": share(idle),
        "top_leaf_pct": [(f, share(c)) for f, c in sorted(leaf.items(), key=lambda kv: -kv[1])[:15]],
        "top_categories_pct": [(f, share(c)) for f, c in sorted(engine_frames.items(), key=lambda kv: -kv[1])[:15]],
    }
    say(f"profile of the engine's main thread during {name}: {samples} samples, "
        f"{prof['idle_in_epoll_pct']}% idle in epoll; busiest leaf frames (% of wall time):")
    for frame, pc in prof["top_leaf_pct"][:8]:
        say(f"   {pc:5.1f}%  {frame}")
    say("  by what the loop is doing (% of wall time):")
    for frame, pc in prof["top_categories_pct"][:10]:
        say(f"   {pc:5.1f}%  {frame}")


#: What an on-CPU sample is spent on: the first rule (innermost frame first)
#: that matches any frame of the stack names it.
CPU_RULES = (
    ("store: record writes and reads", ("salt_callbacks/store/", "salt_callbacks/adapters/cache.py", "salt/cache/",
                                        "sqlite3")),
    ("engine events out: the announcements (PullWriter on 3008, else the EventSender thread)",
     ("PullWriter", "EventSender", "_run_batched", "_run_one_by_one")),
    ("HTTP client: aiohttp + transport", ("aiohttp/", "salt_callbacks/delivery/transport.py", "yarl/",
                                          "multidict/")),
    ("bus in: the publisher socket + decoding events", ("salt/transport/", "salt/utils/event.py", "msgpack/",
                                                       "salt/payload.py", "tornado/", "salt_callbacks/adapters/bus.py",
                                                       "salt_callbacks/adapters/ipc.py")),
    ("signing (HMAC)", ("salt_callbacks/webhook/signing.py",)),
    ("payload encoding (JSON)", ("salt_callbacks/webhook/payload.py",)),
    ("logging", ("logging/", "salt/_logging/")),
)


def cpu_category(frames):
    for label, needles in CPU_RULES:
        for frame in reversed(frames):
            if any(n in frame for n in needles):
                return label
    for frame in reversed(frames):
        if "salt_callbacks/" in frame:
            return f"engine: {_frame_name(frame)}"
    if any("asyncio/" in f for f in frames):
        return "asyncio loop itself"
    return _frame_name(frames[-1]) if frames else "?"


def _summarise_cpu(ctx, out, name):
    """Shares of on-CPU samples (all threads of the engine process) by what they do."""
    if not out.exists():
        ctx.note(f"py-spy wrote no CPU profile for {name}")
        return
    cats, leaf, total = {}, {}, 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count, frames = int(count), stack.split(";")
        total += count
        cat = cpu_category(frames)
        cats[cat] = cats.get(cat, 0) + count
        key = f"{_frame_name(frames[-1])}  ({frames[-1].rsplit('(', 1)[-1].rstrip(')')})"
        leaf[key] = leaf.get(key, 0) + count

    def top(table, n):
        return [(k, round(100.0 * v / max(1, total), 1)) for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:n]]

    prof = ctx.results.setdefault("cpu_profiles", {})[name] = {
        "scenario": name, "file": str(out), "samples": total, "by_category_pct": top(cats, 15),
        "top_leaf_pct": top(leaf, 20)}
    say(f"on-CPU profile of the engine process (all threads) during {name}: {total} samples; by what (% of CPU):")
    for label, pc in prof["by_category_pct"][:12]:
        say(f"   {pc:5.1f}%  {label}")
