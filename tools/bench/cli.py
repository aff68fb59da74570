"""The bench's command line: flags, the run, the JSON and the page (``python -m tools.bench``)."""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import tools.bench as bench
from tests.support.receivers import ReceiverProcess
from tools.bench import BENCH, REPO, say
from tools.bench import report
from tools.bench.context import Ctx
from tools.bench.scenarios import PARTS


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (a few minutes here: the masters' starts dominate)")
    p.add_argument("--returns", type=int, default=10000, help="returns for the event-injection throughput run")
    p.add_argument("--sj-returns", type=int, default=3000, help="returns for the store_job throughput runs")
    p.add_argument("--tput-seconds", type=float, default=10, help="cap on each closed-loop throughput run (s)")
    p.add_argument("--pending", type=int, default=100000, help="pending callbacks for the TIMEOUT/memory run")
    p.add_argument("--burst", type=int, default=15000, help="returns in one burst (engine and baseline)")
    p.add_argument("--procs", type=int, default=4, help="injector processes")
    p.add_argument("--rate", type=float, default=0,
                   help="returns/s for the latency runs (0: half the bus ceiling measured in this run, "
                        "event injection, as issue 13 defines added latency; 1000 when the bus part does not run)")
    p.add_argument("--latency-seconds", type=float, default=5)
    p.add_argument("--hole-share", type=float, default=0.1, help="share of returns aimed at a dead receiver")
    p.add_argument("--due-rate", type=float, default=1000, help="deadlines falling due per second")
    p.add_argument("--due-seconds", type=float, default=5)
    p.add_argument("--announce-rate", type=float, default=2000, help="new events/s when announcing jobs ahead")
    p.add_argument("--baseline-returns", type=int, default=500)
    p.add_argument("--baseline-wait", type=float, default=60, help="cap on the baseline throughput run (s)")
    p.add_argument("--baseline-burst-wait", type=float, default=45, help="cap on the baseline burst wait (s)")
    p.add_argument("--burst-wait", type=float, default=90, help="cap on the engine burst wait (s)")
    p.add_argument("--window", type=int, default=3000, help="max outstanding returns in closed-loop runs")
    p.add_argument("--devices", type=int, default=1000, help="distinct device ids per scenario")
    p.add_argument("--http-requests", type=int, default=20000)
    p.add_argument("--http-concurrency", type=int, default=50)
    p.add_argument("--store-cap", type=float, default=60, help="cap (s) on repeated store calls")
    p.add_argument("--verify-every", type=int, default=50, help="receiver checks every Nth signature")
    p.add_argument("--sweep-records", type=int, default=100000, help="expired records the sweep scenario removes")
    p.add_argument("--sweep-seconds", type=float, default=15,
                   help="returns keep flowing this long past the sweep's expected start")
    p.add_argument("--soak-minutes", type=float, default=1,
                   help="length of the soak (issue 15: a steady rate to a receiver failing 1 request in 10)")
    p.add_argument("--soak-rate", type=float, default=200, help="returns/s during the soak")
    p.add_argument("--soak-sample", type=float, default=5, help="seconds between the soak's samples")
    p.add_argument("--callbacks", default="{}", help="JSON merged into the engine's callbacks: block")
    p.add_argument("--only", default="http,bus,engine,pending,sweep,baseline,soak",
                   help="comma list of parts to run: http,bus,engine,pending,sweep,baseline,soak")
    p.add_argument("--profile", default="",
                   help="comma list of tput,pending,burst: py-spy (--idle, raw) the engine's main thread during "
                        "the event throughput run / the TIMEOUT window / the burst recovery (needs py-spy in the venv)")
    p.add_argument("--quiet-wait", type=float, default=10,
                   help="before each scenario wait up to this many s for other processes to go quiet (0: no wait)")
    p.add_argument("--quiet-cores", type=float, default=0.3,
                   help="'quiet' = processes outside the bench use fewer cores than this")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each headline scenario (ceilings, throughput, latency, baseline throughput); "
                        "the median run is reported")
    p.add_argument("--json", default=str(BENCH / "results.json"), help="where to write the results")
    p.add_argument("--page", default=None, help="where to write the results page (default: --json with .md)")
    args = p.parse_args(argv)
    if args.quick:
        defaults = {"returns": 1000, "sj_returns": 200, "pending": 2000, "burst": 1000, "rate": 300,
                    "latency_seconds": 2, "due_rate": 300, "due_seconds": 2, "baseline_returns": 30,
                    "baseline_wait": 10, "baseline_burst_wait": 5, "burst_wait": 20, "http_requests": 2000,
                    "store_cap": 5, "procs": 2, "quiet_wait": 0, "tput_seconds": 3, "soak_minutes": 0.5,
                    "soak_rate": 100, "soak_sample": 3,
                    "sweep_records": 2000, "sweep_seconds": 5}
        for key, value in defaults.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.callbacks_overrides = json.loads(args.callbacks)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    args.profile = {x.strip() for x in args.profile.split(",") if x.strip()}
    return args


def code_state():
    """Which engine was measured: the commit, local changes, and a hash of the package."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    digest = hashlib.sha256()
    package = REPO / "salt_callbacks"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty": git("status", "--porcelain", "--", "salt_callbacks", "_engines", "_runners", "_returners"),
            "salt_callbacks_sha256": digest.hexdigest()[:16]}


def machine_state():
    info = {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "python": sys.version.split()[0],
            "platform": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import psutil  # pylint: disable=import-outside-toplevel

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import salt.version  # pylint: disable=import-outside-toplevel

        info["salt"] = salt.version.__version__
    except ImportError:
        pass
    return info


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.time()
    if BENCH.exists():
        shutil.rmtree(BENCH)
    BENCH.mkdir(parents=True)
    ctx = Ctx(args)
    results = ctx.results
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("only", "profile")}
    results["config"]["only"] = [part for part in PARTS if part in args.only]
    results["config"]["profile"] = sorted(args.profile)
    results["argv"] = list(argv)
    results["started_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["code"] = code_state()
    results["machine"] = machine_state()
    failed = None
    try:
        ctx.receiver = ReceiverProcess(ctx.secret, args.verify_every)
        say(f"receiver on {ctx.receiver.url()}, dead receiver on {ctx.receiver.hole_url}")
        for part, run in PARTS.items():
            if part in args.only:
                run(ctx)
        results["receiver"] = ctx.receiver.stats()
        results["receiver"].pop("counts", None)
        if results["receiver"].get("bad_signature"):
            ctx.note(f"{results['receiver']['bad_signature']} sampled webhook signature(s) did not verify")
    except KeyboardInterrupt:
        failed = "interrupted"
    except Exception as exc:  # noqa: BLE001 - report what we have
        failed = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if ctx.master is not None:
            ctx.master.stop()
        ctx.close_pool()
        if ctx.receiver is not None:
            ctx.receiver.stop()
    results["runtime_s"] = round(time.time() - started, 1)
    results["failed"] = failed
    report.annotate(results)
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    page_path = report.write_page(json_path, args.page)
    print(report.text_table(results))
    for note in results["notes"]:
        print(f"note: {note}")
    print(f"runtime {results['runtime_s']:.0f} s; results in {json_path}, page {page_path}")
    if failed:
        print(f"BENCH FAILED: {failed}", file=sys.stderr)
        return 1
    return 0
