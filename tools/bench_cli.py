"""CPU and wall time of ``fitkit --help`` and ``fitkit fit --help`` (the CLI must not import torch for help).

Runs each command ``--repeat`` times as a fresh process (the installed ``fitkit``
script next to this Python, else ``python -m fitkit.cli``) and prints the median
CPU time (user + system of the child) and wall time, plus whether torch was
imported (checked in one extra run with ``python -X importtime``).

    python tools/bench_cli.py            # table
    python tools/bench_cli.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["fit", "--help"], ["demo", "--help"], ["--version"])


def fitkit_command() -> list[str]:
    script = Path(sys.executable).with_name("fitkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fitkit.cli"]


def time_once(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def imports_torch(args: list[str]) -> bool:
    code = ("import sys; from fitkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    base = fitkit_command()
    rows = []
    for cmd in COMMANDS:
        time_once(base + cmd)  # warm the file cache
        runs = [time_once(base + cmd) for _ in range(args.repeat)]
        rows.append({"command": "fitkit " + " ".join(cmd),
                     "cpu_s": statistics.median(r[0] for r in runs),
                     "wall_s": statistics.median(r[1] for r in runs),
                     "imports_torch": imports_torch(cmd)})
    print(f"{'command':24s} {'CPU s':>6s} {'wall s':>7s}  torch imported")
    for r in rows:
        print(f"{r['command']:24s} {r['cpu_s']:6.3f} {r['wall_s']:7.3f}  {r['imports_torch']}")
    print(f"(median of {args.repeat} runs, {os.cpu_count()} cores; {' '.join(base)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
