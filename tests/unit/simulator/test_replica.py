"""A simulated replica: the pause strategies' costs in simulated time."""

import pytest

from replicas.policy import ReplicaProfile
from replicas.types import AugTurn
from simulator.cost import LinearCost
from simulator.engine import EngineLimits
from simulator.events import EventLoop
from simulator.replica import ReplicaSetup, SimCall, SimReplica


def _setup(policy: str, swap_s_per_token: float | None) -> ReplicaSetup:
    kv_bytes = 1000
    swap_bw = kv_bytes / swap_s_per_token if swap_s_per_token else None
    return ReplicaSetup(
        replica_id="r-0", deployment="r", gpu_class="g", model="m", policy=policy,
        limits=EngineLimits(8, 512, 4096), num_blocks=257, block_size=16,
        enable_prefix_caching=True, max_waiting_requests=4,
        cost=LinearCost(c_ms=10.0, a_ms_per_token=0.1), host_s_per_step=0.0,
        profile=ReplicaProfile(0.1, 10.0, 256, kv_bytes, swap_bw),
        swap_s_per_token=swap_s_per_token, cpu_swap_tokens=10_000 if swap_s_per_token else 0,
        rerank_every_steps=1, starvation_threshold_steps=100, pause_kv_watermark=0.85,
        reserved_slots=1, budget_check_s=0.05, live_profile=False)


def _run(policy: str, swap_s_per_token: float | None, api_s: float):
    loop = EventLoop()
    replica = SimReplica(_setup(policy, swap_s_per_token), loop)
    done: list[SimCall] = []
    call = SimCall("c", list(range(100, 400)), (AugTurn(10, "api", api_s, 5), AugTurn(4)), 0, 0.0,
                   None, on_done=lambda c, t: done.append(c))
    replica.submit(call)
    loop.run()
    assert done == [call]
    return replica, call, loop


def test_swap_stalls_the_engine_for_the_copies_and_recomputes_nothing():
    replica, call, loop = _run("infercept-oracle", 1e-5, api_s=100.0)
    assert replica.calls_by_strategy["swap"] == 1
    context = 300 + 10 - 1                       # the last sampled token never had KV
    assert replica.swapped_tokens == context and replica.recomputed_tokens == 0
    # steps: prefill 300 (40 ms), 9 decodes (10.1 ms each); after the call, 6 new tokens
    # (the result and the re-sent one, 10.6 ms) and 3 decodes.  The copy out moves the
    # whole context; the copy in only what the prefix cache lost meanwhile (309 − 19 full
    # blocks of 16 = 5 tokens)
    busy = 0.040 + 9 * 0.0101 + 0.0106 + 3 * 0.0101 + (context + 5) * 1e-5
    assert abs(replica.busy_s - busy) < 1e-9
    assert call.turn_tokens == [10, 4] and call.output_tokens == 14


def test_discard_recomputes_what_the_prefix_cache_lost_and_fcfs_never_preserves():
    replica, call, _ = _run("fcfs", None, api_s=1.0)
    assert replica.calls_by_strategy == {"preserve": 0, "swap": 0, "discard": 1}
    # 315 tokens after the call, 304 of them (19 full blocks) from the prefix cache; the 5
    # result tokens and the re-sent one never had KV: 315 − 304 − 6 = 5 recomputed
    assert replica.recomputed_tokens == 5


def test_preserve_holds_the_session_and_recomputes_nothing():
    replica, call, _ = _run("infercept-oracle", None, api_s=0.001)
    assert replica.calls_by_strategy["preserve"] == 1 and replica.recomputed_tokens == 0
    assert len(replica.budget) == 0 and replica.kv.num_free_blocks == 256


def test_the_host_time_per_step_lengthens_every_step() -> None:
    import dataclasses
    loop, done = EventLoop(), []
    setup = dataclasses.replace(_setup("fcfs", None), host_s_per_step=0.002)
    replica = SimReplica(setup, loop)
    replica.submit(SimCall("c", list(range(100, 400)), (AugTurn(10),), 0, 0.0, None,
                           on_done=lambda c, t: done.append(t)))
    loop.run()
    base_replica = SimReplica(_setup("fcfs", None), EventLoop())
    base_done: list[float] = []
    base_replica.submit(SimCall("c", list(range(100, 400)), (AugTurn(10),), 0, 0.0, None,
                                on_done=lambda c, t: base_done.append(t)))
    base_replica.loop.run()
    # the same steps (one prefill, nine decodes), each 2 ms longer
    assert replica.num_steps == base_replica.num_steps == 10
    assert done[0] - base_done[0] == pytest.approx(10 * 0.002)
