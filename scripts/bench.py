"""`sngan bench` from a source checkout: `python scripts/bench.py --quick --out bench.json`.

Times training (steps/s and images/s per architecture and D normalisation, the SN overhead, the
speed options) and FID's Inception (images/s) on this device; see docs/benchmarks.md. The options
are those of `sngan bench --help`. The project's acceptance checks are in benchmarks/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when sngan is not installed

from sngan.cli import main as cli_main


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv` (default: sys.argv[1:]); exits."""
    cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
