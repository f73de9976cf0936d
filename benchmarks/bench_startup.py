"""Start-up benchmark: wall time of `governance --help` against `python -c "import click"` (the peer: the
least any click CLI pays), measured in the same run, plus where the time goes (``python -X importtime``).

    python benchmarks/bench_startup.py            # 15 runs each, the median and the minimum
    python benchmarks/bench_startup.py --quick    # 7 runs each

Target (issue 19): `governance --help` <= 0.2 s on the 2-core development machine when it is quiet. The minimum
is the figure to compare with the target (the machine is shared); the ratio to the peer is the portable one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.2


def governance_exe() -> list[str]:
    exe = Path(sys.executable).with_name("governance")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "governance"]


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return times


def import_breakdown(top: int = 12) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time under `governance --help`, in microseconds."""
    code = "from governance.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         env=dict(os.environ))
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 3:  # top-level imports only (nesting shown by indentation)
                rows.append((int(parts[1]), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 7 if args.quick else 15
    peer = wall([sys.executable, "-c", "import click"], runs)
    ours = wall([*governance_exe(), "--help"], runs)
    print(f"{'command':34} {'median s':>9} {'min s':>7} {'vs peer (min)':>14}")
    for name, t in (("python -c 'import click' (peer)", peer), ("governance --help", ours)):
        print(f"{name:34} {statistics.median(t):9.3f} {min(t):7.3f} {min(t) / min(peer):13.2f}x")
    met = min(ours) <= TARGET_S
    print(f"\ntarget governance --help <= {TARGET_S} s (min of {runs}): {'met' if met else 'NOT met'} "
          f"({min(ours):.3f} s; load average {os.getloadavg()[0]:.1f})")
    print("\nlargest top-level imports (cumulative, ms):")
    for us, name in import_breakdown():
        print(f"  {us / 1000:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
