"""The real side of a replica-policy fidelity point: one replica's ``ReplicaCore`` on the
real vLLM engine, in this process — no Serve, no queue manager, so less noise — fed a
workload at its arrival times.

Each request is built by the ingress's own code (``orchestrator.request_builder`` from the
body ``bench run`` would send), and carries the true lengths as its prediction (at
arrival and at every resume, as ``simulate run --oracle`` gives them), so that the real
and the simulated replica see the same inputs.  Records are the benchmarks' own, so
``benchmarks.metrics.summarize`` reads both sides alike.  Importing this module imports
no engine; :func:`replay` starts one (call it under ``if __name__ == "__main__"``)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.client import is_plain, request_body
from benchmarks.cpu_use import CpuMeter, CpuUse
from benchmarks.metrics import RequestRecord
from benchmarks.workload import Workload, WorkloadRequest
from orchestrator.config import AppConfig
from orchestrator.protocol import CompletionRequest
from predictor_service.types import Prediction
from replicas.policy.profile import StepRecord
from replicas.types import AugTurn, ReplicaRequest, ReplicaStats
from simulator.predictions import OraclePredictions

#: How often the step records are drained (the ring holds 4,096 steps: ~20 s here).
STEP_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class DirectRun:
    records: list[RequestRecord]
    duration_s: float
    #: The replica's report at the end (strategy counts, recomputed tokens, preemptions).
    stats: ReplicaStats
    #: Every engine step of the run, timed by the engine (its scheduler's step records).
    steps: list[StepRecord]
    #: CPU of this process (the replica's Python), of the engine core, of the machine.
    cpu: CpuUse


def _turns(w: WorkloadRequest) -> tuple[AugTurn, ...]:
    return tuple(AugTurn(t.generate_tokens, t.api_name, t.api_duration_s, t.api_tokens)
                 for t in w.turns)


async def replay(app: AppConfig, workload: Workload) -> DirectRun:
    """Run ``workload`` (arrival times in seconds from the start) on the config's first
    replica; every request completes or records its error."""
    from orchestrator.models import ServedModel
    from orchestrator.request_builder import build_request
    from replicas.deployment import ReplicaCore
    from replicas.engine import VLLMEngine

    replica_cfg = app.replicas[0]
    model = ServedModel.load(replica_cfg.model_name, [replica_cfg])
    oracle = OraclePredictions(random.Random(0), 0.0)

    async def predict_resume(request: ReplicaRequest, history: list[int],
                             turn: AugTurn) -> Prediction | None:
        turns = request.augmentation or ()
        index = next(i for i, t in enumerate(turns) if t is turn)
        return oracle.at_resume(request.model, history, turns, index, request.sampling.max_tokens)

    engine = VLLMEngine(replica_cfg)
    core = ReplicaCore(replica_cfg, engine, "direct-0", replica_cfg.name,
                       predict_resume=predict_resume)
    budget: asyncio.Task[Any] | None = None
    steps: list[StepRecord] = []
    collecting = True

    async def collect() -> None:  # the scheduler keeps its last 4,096 steps: drain often
        while collecting:
            steps.extend(await engine.take_steps())
            await asyncio.sleep(STEP_POLL_S)

    try:
        await core.start()
        await engine.take_steps()  # drop the warm-up's
        budget = asyncio.get_running_loop().create_task(core.budget_loop())
        collector = asyncio.get_running_loop().create_task(collect())
        records = [RequestRecord(w.request_id, w.slo, w.arrival_s or 0.0,
                                 expected_tokens=w.generated_tokens,
                                 expected_turn_tokens=[] if is_plain(w) else
                                 [t.generate_tokens for t in w.turns],
                                 api_time_s=w.api_time_s) for w in workload.requests]
        meter = CpuMeter.this_process(engine.process_ids())
        meter.start()
        start = time.perf_counter()

        async def one(w: WorkloadRequest, rec: RequestRecord) -> None:
            rec.scheduled_s = start + (w.arrival_s or 0.0)
            delay = rec.scheduled_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rec.send_s = time.perf_counter()
            try:
                body = CompletionRequest.model_validate(request_body(w, model.name))
                built = build_request(body, list(w.prompt_token_ids or ()), model, app,
                                      w.request_id)
                turns = _turns(w)
                header = replace(built.replica.header, prediction=oracle.at_arrival(
                    model.name, w.prompt_token_ids or (), turns, w.generated_tokens))
                async for delta in core.generate(replace(built.replica, header=header)):
                    now = time.perf_counter()
                    if delta.token_ids:
                        if rec.first_token_s is None:
                            rec.first_token_s = now
                        rec.output_tokens += len(delta.token_ids)
                    if delta.info and "turns" in delta.info:
                        rec.turn_tokens = [t["generated_tokens"] for t in delta.info["turns"]]
                        rec.api_time_s = sum(t["api_wait_s"] for t in delta.info["turns"])
                rec.status, rec.end_s = 200, time.perf_counter()
            except Exception as exc:  # noqa: BLE001 - recorded, the replay goes on
                rec.status, rec.error = 500, f"{type(exc).__name__}: {exc}"[:500]

        await asyncio.gather(*(one(w, r) for w, r in zip(workload.requests, records)))
        duration_s = time.perf_counter() - start
        cpu = meter.stop()
        collecting = False
        await collector
        steps.extend(await engine.take_steps())
        return DirectRun(records, duration_s, core.stats(), steps, cpu)
    finally:
        if budget is not None:
            budget.cancel()
        engine.shutdown()
