"""Start-up of ``python -m ser predict examples/angry.flac``: wall time and what the imports cost.

Runs the command a few times with warm caches (the first, discarded run warms the OS file cache
and records the runtime decision), keeps the median wall time, and reads ``python -X importtime``
for the slowest top-level imports. ``--label before|after`` stores one side of a comparison in
``benchmarks/results/startup.json``; the Markdown table shows every label recorded there.

    python benchmarks/startup.py --label after --runs 5
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLIP = REPO / "examples" / "angry.flac"


def wall_seconds(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run.

    On a loaded machine wall time swings 3-5x; CPU time swings much less, and on a quiet machine
    it is close to the wall time of this mostly single-threaded start.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_times(command: list[str], env: dict[str, str], top: int = 12) -> tuple[float, list[dict[str, object]]]:
    """Total import time and the packages that cost most (each module's own time, summed per package)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], cwd=REPO, env=env, capture_output=True, text=True)
    per_package: dict[str, float] = {}
    total = 0.0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line[len("import time:"):].split("|")
        seconds = int(own) / 1e6  # a module's own time, so each package is charged only for itself
        package = name.strip().split(".")[0]
        per_package[package] = per_package.get(package, 0.0) + seconds
        total += seconds
    slowest = sorted(per_package.items(), key=lambda item: -item[1])[:top]
    return total, [{"module": name, "seconds": round(seconds, 3)} for name, seconds in slowest]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="name of this measurement (before/after)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("SER_RUNTIME", None)  # the default (auto) runtime, as a user runs it
    command = [sys.executable, "-m", "ser", "predict", str(CLIP.relative_to(REPO))]
    wall_seconds(command, env)  # warm caches (and record the runtime decision, once)
    runs = [wall_seconds(command, env) for _ in range(args.runs)]
    walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
    bare = [wall_seconds([sys.executable, "-c", "pass"], env)[0] for _ in range(3)]
    imports, slowest = import_times(command, env)
    load = os.getloadavg()[0]
    entry = {
        "command": "python -m ser predict examples/angry.flac",
        "runs": args.runs,
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_min": round(min(walls), 3),
        "wall_s_all": [round(wall, 3) for wall in walls],
        "cpu_s_median": round(statistics.median(cpus), 3),
        "python_startup_s": round(min(bare), 3),
        "import_s_total": round(imports, 3),
        "slowest_imports": slowest,
        "load_average_1min": round(load, 2),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "startup.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[args.label] = entry
    path.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Start-up: `python -m ser predict examples/angry.flac`, warm caches",
        "",
        "| label | wall median | wall min | CPU (user+sys) median | imports (-X importtime) | slowest imports | load (1 min) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for label, row in results.items():
        top = ", ".join(f"{item['module']} {item['seconds']:.2f}s" for item in row["slowest_imports"][:5])
        lines.append(
            f"| {label} | {row['wall_s_median']:.2f} s | {row['wall_s_min']:.2f} s | {row.get('cpu_s_median', float('nan')):.2f} s "
            f"| {row['import_s_total']:.2f} s "
            f"| {top} | {row['load_average_1min']} |"
        )
    lines += ["", "Written by `python benchmarks/startup.py --label LABEL`; times swing with the machine's load."]
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
