"""``SimFleet(direct=True)``: the simulated side of a replica-policy fidelity point feeds
its one replica as ``benchmarks.direct_replay`` feeds the real engine — every arrival at
once, no queue manager and so no room limit in between."""

from __future__ import annotations

import random

from benchmarks.workload import Turn, Workload, WorkloadRequest
from simulator.events import EventLoop
from simulator.fleet import START_S, SimFleet
from simulator.predictions import OraclePredictions
from simulator.setup import load_config, replica_setups

CONFIG = "deploy/serve/bench-lamps.yaml"  # 32 sequences + 32 waiting: 64 in flight at most
NUM_REQUESTS = 100


def _fleet(direct: bool) -> tuple[SimFleet, Workload]:
    cfg = load_config(CONFIG)
    loop = EventLoop()
    fleet = SimFleet(cfg.app, replica_setups(cfg, "cpu-tiny-llama"),
                     OraclePredictions(random.Random(0), 0.0), loop, direct=direct)
    requests = [WorkloadRequest(f"r{i}", tuple(range(1, 40 + i)), None,
                                (Turn(30, "search", 0.5, 8), Turn(10)), arrival_s=0.001 * i)
                for i in range(NUM_REQUESTS)]
    return fleet, Workload("burst", requests, {})


def _at_the_replica_after_arrivals(direct: bool) -> tuple[int, int]:
    fleet, w = _fleet(direct)
    replica = next(iter(fleet.replicas.values()))
    seen = []
    submit = replica.submit

    def spy(call):
        seen.append(fleet.loop.now_s)
        submit(call)
    replica.submit = spy  # type: ignore[method-assign]
    fleet.loop.at(START_S + 0.2, 5, lambda: fleet.loop.stop())
    fleet.run(w, fleet.app.replicas[0].model_name, None)
    return len(seen), len(fleet.dispatcher.ledger)


def test_direct_submits_every_arrival_at_once_and_the_queue_manager_sees_none() -> None:
    submitted, ledger = _at_the_replica_after_arrivals(direct=True)
    assert submitted == NUM_REQUESTS and ledger == 0
    # through the queue manager the replica's room (64 in flight) holds the rest back
    submitted, ledger = _at_the_replica_after_arrivals(direct=False)
    assert submitted <= 64 and ledger == submitted


def test_direct_runs_every_request_to_completion() -> None:
    fleet, w = _fleet(direct=True)
    records = fleet.run(w, fleet.app.replicas[0].model_name, None)
    assert len(records) == NUM_REQUESTS
    assert all(r.status == 200 and r.output_tokens == 40 for r in records)
    assert len(fleet.dispatcher.ledger) == 0
