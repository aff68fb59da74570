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
    # --idle: wall-clock shares (idle in epoll included) say what holds the
    # loop; --nonblocking: do not pause it.
    ctx.profile = (subprocess.Popen([str(pyspy), "record", "--idle", "--nonblocking", "-r", "100",
                                     "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "-p", str(proc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out, name)


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
    proc, out, name = ctx.profile
    ctx.profile = None
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(5)
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
