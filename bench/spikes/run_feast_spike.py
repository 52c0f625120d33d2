"""Design A vs B for Feast lookups, side by side, repeated: in-process, through `feast serve`, and the SQLite floor.

    python bench/spikes/run_feast_spike.py --stack-python .venv/bin/python --feast-venv .venv-feast \\
        --repo /tmp/feast-spike --rounds 5 -n 3000

``--stack-python``: the service's Python (in-process lookups need Feast in it: design A; the HTTP client
needs only requests). ``--feast-venv``: Feast's own environment (design B), which makes the repo and runs
``feast serve`` on 127.0.0.1. Rounds alternate the three modes so load drifts hit them alike; medians of the
per-round p50/p99 are printed with the load average. Stdlib only; nothing from the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_json(cmd: list[str], cwd: str | None = None) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise RuntimeError(f"{cmd[:3]} failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_server(feast_bin: Path, repo: Path, port: int, max_requests: int) -> tuple[subprocess.Popen, float]:
    t = time.perf_counter()
    cmd = [str(feast_bin), "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log", "-w", "1"]
    cmd += ["--max-requests", str(max_requests)]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - t < 180:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError("feast serve exited before it was healthy")
    proc.kill()
    raise RuntimeError("feast serve not healthy after 180 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack-python", required=True)
    parser.add_argument("--feast-venv", required=True, type=Path)
    parser.add_argument("--repo", type=Path, default=Path("/tmp/feast-spike"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="feast serve's worker recycling")
    parser.add_argument("--no-inproc", action="store_true", help="the stack Python has no Feast (design B only)")
    args = parser.parse_args()
    feast_python = args.feast_venv / "bin" / "python"
    lookup = str(HERE / "feast_lookup.py")

    if not (args.repo / "data" / "online_store.db").exists():
        shutil.rmtree(args.repo, ignore_errors=True)
        print("repo:", json.dumps(run_json([str(feast_python), str(HERE / "feast_repo.py"), str(args.repo)])))

    port = free_port()
    server, ready_s = start_server(args.feast_venv / "bin" / "feast", args.repo, port, args.max_requests)
    print(f"feast serve healthy after {ready_s:.2f} s (pid {server.pid})")
    url = f"http://127.0.0.1:{port}"
    modes = {
        "sqlite": [args.stack_python, lookup, "sqlite", str(args.repo)],
        "http": [args.stack_python, lookup, "http", url],
    }
    if not args.no_inproc:
        modes["inproc"] = [args.stack_python, lookup, "inproc", str(args.repo)]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    try:
        for r in range(args.rounds):
            order = list(modes)[r % len(modes) :] + list(modes)[: r % len(modes)]
            for mode in order:
                out = run_json([*modes[mode], "-n", str(args.n), "--seed", str(r)])
                out["load1"] = os.getloadavg()[0]
                results[mode].append(out)
                print(json.dumps(out), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print("\nmedians over rounds (ms):")
    summary = {}
    for mode, rows in results.items():
        summary[mode] = {k: round(statistics.median(x[k] for x in rows), 3) for k in ("p50_ms", "p99_ms", "mean_ms")}
        summary[mode]["setup_s"] = round(statistics.median(x["setup_s"] for x in rows), 2)
        print(f"  {mode:7s} {summary[mode]}")
    floor = summary["sqlite"]
    for mode in summary:
        if mode != "sqlite":
            print(
                f"  {mode} / floor: p50 x{summary[mode]['p50_ms'] / floor['p50_ms']:.1f}, "
                f"p99 x{summary[mode]['p99_ms'] / floor['p99_ms']:.1f}"
            )
    print(
        json.dumps(
            {
                "server_ready_s": round(ready_s, 2),
                "summary": summary,
                "load1": [round(x["load1"], 1) for rows in results.values() for x in rows],
            }
        )
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
