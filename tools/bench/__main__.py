"""``python -m tools.bench`` (what ``make bench`` runs)."""

import sys

from tools.bench.cli import main

sys.exit(main())
