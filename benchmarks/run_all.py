"""Run every benchmark in this folder, one after the other, in fresh processes (one command: `make bench`).

    python benchmarks/run_all.py            # each benchmark's --quick variant (a few minutes in all)
    python benchmarks/run_all.py --full     # the full variants (ResNet-18-shaped networks: much longer)
    python benchmarks/run_all.py neflag bort   # only some

Each benchmark prints its own table, with ratios against a peer measured in the same run (Captum IG and
Saliency, plain ONNX Runtime forward throughput, torch SGD/AdamW, a bare Starlette endpoint, the local
executor). Results are only comparable within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. neflag interaction")
    parser.add_argument("--full", action="store_true", help="run the full variants instead of --quick")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        wanted = {f"bench_{n}.py" for n in args.names}
        unknown = wanted - {s.name for s in scripts}
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: "
                         + ", ".join(s.stem[len('bench_'):] for s in scripts))
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for script in scripts:
        cmd = [sys.executable, str(script)] + ([] if args.full else ["--quick"])
        print(f"\n=== {script.stem} ({' '.join(cmd[1:])})", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd)
        print(f"=== {script.stem}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
