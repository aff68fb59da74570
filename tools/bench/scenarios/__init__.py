"""The scenarios, by part (``--only``), in the order a run takes them."""

from tools.bench.scenarios.baseline import run_baseline
from tools.bench.scenarios.ceilings import run_bus_ceiling, run_http_ceiling
from tools.bench.scenarios.engine import run_engine
from tools.bench.scenarios.pending import run_pending
from tools.bench.scenarios.soak import run_soak
from tools.bench.scenarios.sweep import run_sweep

#: --only name -> what runs. pending after engine: it reads the idle RSS the engine part measured.
PARTS = {
    "http": run_http_ceiling,
    "bus": run_bus_ceiling,
    "engine": run_engine,
    "pending": run_pending,
    "sweep": run_sweep,
    "baseline": run_baseline,
    "soak": run_soak,
}
