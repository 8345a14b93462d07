"""How fast the open-loop client can send: replay N single-turn requests at a target rate
against :mod:`benchmarks.trivial_server` and report the achieved rate and send lag
(``augserve bench client``)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

from benchmarks.client import run_workload
from benchmarks.generators import poisson_arrivals
from benchmarks.stats import percentile
from benchmarks.workload import Turn, Workload, WorkloadRequest


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(n: int, rate_rps: float) -> Workload:
    reqs = [WorkloadRequest(f"c{i}", (1, 2, 3), None, (Turn(1),), arrival_s=a)
            for i, a in enumerate(poisson_arrivals(n, rate_rps, seed=0))]
    return Workload("client-capacity", reqs)


def main(args: argparse.Namespace) -> int:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.trivial_server", str(port)])
    try:
        time.sleep(1.0)
        print("| target req/s | sent | completed | achieved req/s | send lag p50 / p99 ms |")
        print("|---|---|---|---|---|")
        for rate in [float(r) for r in args.rates.split(",")]:
            n = int(rate * args.seconds)
            records, duration = asyncio.run(run_workload(f"http://127.0.0.1:{port}", "trivial",
                                                         workload(n, rate)))
            lags = [(r.send_s - r.scheduled_s) * 1000 for r in records]
            done = sum(r.ok for r in records)
            print(f"| {rate:g} | {n} | {done} | {done / duration:.0f} | "
                  f"{percentile(lags, 50):.1f} / {percentile(lags, 99):.1f} |")
    finally:
        server.terminate()
        server.wait()
    return 0
