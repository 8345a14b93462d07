"""QLM's waiting-time estimator (ALGORITHMS.md, "QLM"; Patke et al. 2024), plain Python.

**Throughput Θ of a replica** (output tokens/s): measured, not labelled — an EWMA of the
replica's reported output rate while it was saturated (no room, or engine-waiting
requests); before it has been saturated, its rate while busy; before any work, the
capacity its measured step profile implies, ``B / (c + a·B)`` for ``B = max_num_seqs``.

**Request waiting time** of a request at a position of the queue: the tokens of the
requests ahead of it (each request's predicted output, from the predictor's median and
p90: ``σ ≈ (p90 − p50) / 1.2816``) drained by the throughput of the replicas that serve
its model, with a tail margin::

    W ≈ f0 + (Σ μ_i + z·√(Σ σ_i²)) / (κ · Σ_r Θ_r)

``f0`` is 0 when a replica has room, else the time until one frees a slot (half a mean
request at the replica's speed).  ``κ`` calibrates the units: the rate at which predicted
work was measured to leave the queue while it was backlogged, over the replicas' summed
output rate (1 until measured) — with API-augmented requests room frees at every pause
and is taken back at every resume, which the output rate alone does not see.  A *pass* (every re-plan period) walks the whole queue in
the policy's order and list-schedules it onto the replicas' **virtual queues** (each
request to the replica that frees first); between passes, an admission's estimate comes
from the pass's cumulative-token curve plus the requests admitted and removed since.

The estimator scores itself: for every dispatched request whose estimate was made at
admission, ``|estimated − actual| / actual`` (requests that waited under ``min_wait_s`` are
not scored: a relative error of a near-zero wait says nothing).
"""

from __future__ import annotations

import bisect
import heapq
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from augserve_common.priors import (
    DEFAULT_A_MS_PER_TOKEN,
    DEFAULT_C_MS,
    FALLBACK_OUTPUT_TOKENS,
)
from orchestrator.queued import QueuedRequest
from replicas.types import SpeedProfile

Z_P90 = 1.2816


@dataclass(slots=True)
class ReplicaSpeed:
    """What the estimator knows of one replica's speed."""

    profile_tokens_per_s: float
    single_seq_tokens_per_s: float
    a_ms_per_token: float
    c_ms: float
    saturated_tokens_per_s: float | None = None
    busy_tokens_per_s: float | None = None
    #: EWMA of the predicted output of the requests dispatched to it (tokens).
    mean_request_tokens: float = FALLBACK_OUTPUT_TOKENS

    @property
    def tokens_per_s(self) -> float:
        for value in (self.saturated_tokens_per_s, self.busy_tokens_per_s):
            if value is not None and value > 0:
                return value
        return max(self.profile_tokens_per_s, 1e-3)

    def observe(self, tokens_per_s: float, num_running: int, saturated: bool, alpha: float) -> None:
        if num_running <= 0 or tokens_per_s <= 0:
            return
        if saturated:
            self.saturated_tokens_per_s = _ewma(self.saturated_tokens_per_s, tokens_per_s, alpha)
        self.busy_tokens_per_s = _ewma(self.busy_tokens_per_s, tokens_per_s, alpha)

    def seq_tokens_per_s(self, num_running: int) -> float:
        """One more sequence's decode speed next to ``num_running`` others."""
        return max(1e-3, min(self.single_seq_tokens_per_s,
                             self.tokens_per_s / max(1, num_running + 1)))

    def prefill_s(self, num_prompt_tokens: int) -> float:
        return (self.a_ms_per_token * num_prompt_tokens + self.c_ms) / 1000.0

    def finish_s(self, num_prompt_tokens: int, num_output_tokens: float, num_running: int) -> float:
        """Prefill plus decode of one request started next to ``num_running`` others."""
        return (self.prefill_s(num_prompt_tokens)
                + num_output_tokens / self.seq_tokens_per_s(num_running))

    def slot_free_s(self) -> float:
        """Time until a full replica frees a slot: half a mean request at its speed."""
        return 0.5 * self.mean_request_tokens / self.tokens_per_s


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else (1 - alpha) * old + alpha * new


def speed_from_profile(profile: SpeedProfile | None, max_num_seqs: int) -> ReplicaSpeed:
    """Initial speed from the replica's measured step profile (``t = a·x + c`` ms; a zero
    or missing value takes the prior)."""
    a = (profile.a_ms_per_token if profile else 0.0) or DEFAULT_A_MS_PER_TOKEN
    c = (profile.c_ms if profile else 0.0) or DEFAULT_C_MS
    b = max(1, max_num_seqs)
    return ReplicaSpeed(profile_tokens_per_s=1000.0 * b / (c + a * b),
                        single_seq_tokens_per_s=1000.0 / (c + a), a_ms_per_token=a, c_ms=c)


def predicted_tokens(request: QueuedRequest, fallback_tokens: float) -> tuple[float, float]:
    """(mean, variance) of the request's output tokens, all turns, capped by max_tokens."""
    p = request.prediction
    if p is None:
        mean, sigma = min(fallback_tokens, request.max_tokens), 0.5 * fallback_tokens
    else:
        mean = p.output_tokens_p50 * request.num_turns
        sigma = max(0.0, p.output_tokens_p90 - p.output_tokens_p50) / Z_P90 * math.sqrt(request.num_turns)
    mean = min(mean, float(request.max_tokens))
    return mean, sigma * sigma


class _SortedSums:
    """Requests added to (or removed from) one group since the last pass: keys with
    running sums.  A group's keys arrive in order (arrival order within a class), so a
    query is a bisection; one out-of-order key turns it into a scan."""

    __slots__ = ("cum_tokens", "cum_var", "in_order", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple] = []
        self.cum_tokens: list[float] = []
        self.cum_var: list[float] = []
        self.in_order = True

    def add(self, key: tuple, tokens: float, var: float) -> None:
        if self.keys and key < self.keys[-1]:
            self.in_order = False
        self.keys.append(key)
        self.cum_tokens.append((self.cum_tokens[-1] if self.cum_tokens else 0.0) + tokens)
        self.cum_var.append((self.cum_var[-1] if self.cum_var else 0.0) + var)

    def below(self, key: tuple) -> tuple[float, float]:
        if self.in_order:
            i = bisect.bisect_left(self.keys, key)
            return ((self.cum_tokens[i - 1], self.cum_var[i - 1]) if i else (0.0, 0.0))
        tokens = var = prev_t = prev_v = 0.0
        for k, t, v in zip(self.keys, self.cum_tokens, self.cum_var):
            if k < key:
                tokens += t - prev_t
                var += v - prev_v
            prev_t, prev_v = t, v
        return tokens, var

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(slots=True)
class _Curve:
    """One model's queue at the last pass (policy keys and cumulative tokens and
    variance), plus per group what was admitted and removed since."""

    keys: list[tuple] = field(default_factory=list)
    cum_tokens: list[float] = field(default_factory=list)
    cum_var: list[float] = field(default_factory=list)
    added: dict[tuple[str, str], _SortedSums] = field(default_factory=dict)
    removed: dict[tuple[str, str], _SortedSums] = field(default_factory=dict)

    def ahead(self, key: tuple) -> tuple[float, float]:
        i = bisect.bisect_left(self.keys, key)
        tokens = self.cum_tokens[i - 1] if i else 0.0
        var = self.cum_var[i - 1] if i else 0.0
        for sums in self.added.values():
            t, v = sums.below(key)
            tokens, var = tokens + t, var + v
        for sums in self.removed.values():
            t, v = sums.below(key)
            tokens, var = tokens - t, var - v
        return max(0.0, tokens), max(0.0, var)

    def num_changes(self) -> int:
        return sum(map(len, self.added.values())) + sum(map(len, self.removed.values()))


@dataclass(slots=True)
class ReplicaView:
    """One replica as a pass sees it."""

    replica_id: str
    model: str
    speed: ReplicaSpeed
    has_room: bool
    num_running: int


@dataclass(slots=True)
class PassResult:
    """A pass's view of the fleet: virtual queues and predicted misses."""

    now_s: float
    #: replica id -> (queued requests planned there, seconds until it drains them)
    virtual_queues: dict[str, tuple[int, float]] = field(default_factory=dict)
    num_predicted_misses: int = 0
    replicas: list[ReplicaView] = field(default_factory=list)
    #: group -> (requests, tokens incl. margin, earliest deadline − now)
    groups: dict[tuple[str, str], tuple[int, float, float]] = field(default_factory=dict)


class WaitEstimator:
    def __init__(self, z: float = 1.0, alpha: float = 0.2, fallback_tokens: float = FALLBACK_OUTPUT_TOKENS,
                 min_wait_s: float = 0.5, error_window: int = 2000) -> None:
        self.z = z
        self.alpha = alpha
        self.fallback_tokens = fallback_tokens
        self.min_wait_s = min_wait_s
        self.speeds: dict[str, ReplicaSpeed] = {}
        self._curves: dict[str, _Curve] = {}
        self._errors: deque[float] = deque(maxlen=error_window)
        #: model -> (seconds since the previous dispatch, predicted tokens) of dispatches
        #: made while a backlog persisted: the rate at which queued work actually leaves,
        #: in the estimate's own units, counting backlogged time only.
        self._drained: dict[str, deque[tuple[float, float]]] = {}
        self._last_dispatch: dict[str, tuple[float, bool]] = {}
        #: The latest (estimated, actual) waits, for operators (``/v1/admin/queue``).
        self.samples: deque[tuple[float, float]] = deque(maxlen=100)
        self.num_scored = 0
        self.last_pass: PassResult | None = None

    # ---- replicas ---------------------------------------------------------------------
    def observe_replica(self, replica_id: str, profile: SpeedProfile | None, max_num_seqs: int,
                        tokens_per_s: float, num_running: int, saturated: bool) -> ReplicaSpeed:
        speed = self.speeds.get(replica_id)
        fresh = speed_from_profile(profile, max_num_seqs)
        if speed is None:
            self.speeds[replica_id] = speed = fresh
        else:  # the profile is refined online by the replica
            speed.profile_tokens_per_s = fresh.profile_tokens_per_s
            speed.single_seq_tokens_per_s = fresh.single_seq_tokens_per_s
            speed.a_ms_per_token, speed.c_ms = fresh.a_ms_per_token, fresh.c_ms
        speed.observe(tokens_per_s, num_running, saturated, self.alpha)
        return speed

    def forget_replica(self, replica_id: str) -> None:
        self.speeds.pop(replica_id, None)

    def on_dispatch(self, replica_id: str, request: QueuedRequest, now_s: float,
                    backlog_after: bool = False) -> None:
        """A request left the queue; ``backlog_after``: its model still has queued ones."""
        speed = self.speeds.get(replica_id)
        if speed is not None:
            speed.mean_request_tokens = _ewma(speed.mean_request_tokens,
                                              request.predicted_tokens, self.alpha)
        estimate = request.est_wait_s
        actual = now_s - request.enqueued_s
        last = self._last_dispatch.get(request.model)
        if last is not None and last[1] and now_s > last[0]:  # backlogged since the last one
            self._drained.setdefault(request.model, deque(maxlen=64)).append(
                (now_s - last[0], request.predicted_tokens))
        self._last_dispatch[request.model] = (now_s, backlog_after)
        if isinstance(estimate, float):
            self.samples.append((round(estimate, 3), round(actual, 3)))
        if isinstance(estimate, float) and actual >= self.min_wait_s:
            self._errors.append(abs(estimate - actual) / actual)
            self.num_scored += 1

    # ---- requests ---------------------------------------------------------------------
    def annotate(self, request: QueuedRequest) -> None:
        request.predicted_tokens, request.predicted_var_tokens = predicted_tokens(
            request, self.fallback_tokens)
        p = request.prediction
        if request.num_turns > 1 and p is not None and p.api_durations:
            mean_s = sum(d.mean_s for d in p.api_durations) / len(p.api_durations)
            request.api_time_s = mean_s * (request.num_turns - 1)

    def drain_scale(self, model: str, replicas: list[ReplicaView]) -> float:
        """κ = the rate queued work of ``model`` was measured to leave the queue (predicted
        tokens dispatched per second while backlogged) over the replicas' summed output
        rate; 1 until measured.  It folds in what the token rate alone misses: requests
        pausing on API calls free their room, resumed ones take it back, prediction bias."""
        drained = self._drained.get(model)
        if not drained or len(drained) < 8:
            return 1.0
        span_s = sum(gap for gap, _ in drained)
        reported = sum(r.speed.tokens_per_s for r in replicas if r.model == model)
        if span_s < 0.5 or reported <= 0:
            return 1.0
        rate = sum(tokens for _, tokens in drained) / span_s
        return min(10.0, max(0.1, rate / reported))

    def admission_wait_s(self, request: QueuedRequest, key: tuple,
                         replicas: list[ReplicaView]) -> float:
        """Estimated wait of a request about to be queued with policy key ``key``."""
        if not replicas:
            return math.inf
        kappa = self.drain_scale(request.model, replicas)
        if any(r.has_room for r in replicas):
            f0 = 0.0
        else:
            f0 = min(r.speed.slot_free_s() for r in replicas) / kappa
        curve = self._curves.get(request.model)
        tokens, var = curve.ahead(key) if curve is not None else (0.0, 0.0)
        throughput = kappa * sum(r.speed.tokens_per_s for r in replicas)
        return f0 + (tokens + self.z * math.sqrt(var)) / throughput

    def service_s(self, request: QueuedRequest, replica: ReplicaView) -> tuple[float, float]:
        """(time to first token, time to the last) once ``replica`` starts it."""
        ttft = replica.speed.prefill_s(request.num_prompt_tokens)
        end = replica.speed.finish_s(request.num_prompt_tokens, request.predicted_tokens,
                                     replica.num_running)
        return ttft, end + request.api_time_s

    def queued(self, request: QueuedRequest, key: tuple) -> None:
        curve = self._curves.setdefault(request.model, _Curve())
        curve.added.setdefault(request.group, _SortedSums()).add(
            key, request.predicted_tokens, request.predicted_var_tokens)

    def removed(self, request: QueuedRequest, key: tuple) -> None:
        curve = self._curves.get(request.model)
        if curve is not None:
            curve.removed.setdefault(request.group, _SortedSums()).add(
                key, request.predicted_tokens, request.predicted_var_tokens)

    def needs_pass(self) -> bool:
        return any(c.num_changes() > 20_000 for c in self._curves.values())

    # ---- the pass ---------------------------------------------------------------------
    def mark_late(self, requests: Iterable[QueuedRequest], replicas: list[ReplicaView],
                  now_s: float) -> bool:
        """Set ``request.late`` when even the quickest start (no queue ahead, the fastest
        replica of its model) misses its deadline; True if any flag changed."""
        quickest: dict[str, tuple[float, float]] = {}
        for r in replicas:
            start = 0.0 if r.has_room else r.speed.slot_free_s()
            a, c = quickest.get(r.model, (math.inf, math.inf))
            quickest[r.model] = (min(a, r.speed.a_ms_per_token / 1000.0),
                                 min(c, start + r.speed.c_ms / 1000.0))
        changed = False
        for request in requests:
            bound = quickest.get(request.model)
            if bound is None:
                continue
            late = now_s + bound[1] + bound[0] * request.num_prompt_tokens > request.deadline_s
            if late != request.late:
                request.late, changed = late, True
        return changed

    def run_pass(self, ordered: Iterable[tuple[tuple, int, QueuedRequest, tuple[str, str]]],
                 replicas: list[ReplicaView], now_s: float) -> PassResult:
        """List-schedule the queue onto the replicas' virtual queues: each request to the
        replica of its model that frees first; count predicted misses.  ``ordered``: the
        queue policy's entries (key, number, request, group) in its order."""
        result = PassResult(now_s=now_s, replicas=replicas)
        free: dict[str, list[tuple[float, str]]] = {}  # model -> heap of (free at, replica)
        speeds: dict[str, ReplicaView] = {r.replica_id: r for r in replicas}
        counts: dict[str, int] = {r.replica_id: 0 for r in replicas}
        kappa = {m: self.drain_scale(m, replicas) for m in {r.model for r in replicas}}
        for r in replicas:
            start = 0.0 if r.has_room else r.speed.slot_free_s() / kappa[r.model]
            heapq.heappush(free.setdefault(r.model, []), (start, r.replica_id))
        # per replica, fixed for the pass: its prefill line and its drain rate
        prefill = {rid: (v.speed.a_ms_per_token, v.speed.c_ms) for rid, v in speeds.items()}
        rate_of = {rid: kappa[v.model] * v.speed.tokens_per_s for rid, v in speeds.items()}
        curves: dict[str, _Curve] = {}
        #: per model: (curve, its free heap or None)
        per_model: dict[str, tuple[_Curve, list[tuple[float, str]] | None]] = {}
        groups: dict[tuple[str, str], list[float]] = {}
        z, sqrt, heapreplace = self.z, math.sqrt, heapq.heapreplace
        misses = 0
        for key, _n, request, group in ordered:
            model = group[0]
            entry = per_model.get(model)
            if entry is None:
                curve = curves[model] = _Curve()
                entry = per_model[model] = (curve, free.get(model) or None)
            curve, heap = entry
            tokens, var = request.predicted_tokens, request.predicted_var_tokens
            curve.keys.append(key)
            curve.cum_tokens.append((curve.cum_tokens[-1] if curve.cum_tokens else 0.0) + tokens)
            curve.cum_var.append((curve.cum_var[-1] if curve.cum_var else 0.0) + var)
            g = groups.get(group)
            if g is None:
                g = groups[group] = [0, 0.0, math.inf]
            g[0] += 1
            g[1] += tokens + z * sqrt(var)
            left = request.deadline_s - now_s
            g[2] = min(g[2], left)
            if heap is None:
                continue
            wait, replica_id = heap[0]
            a_ms, c_ms = prefill[replica_id]
            if now_s + wait + (a_ms * request.num_prompt_tokens + c_ms) / 1000.0 > request.deadline_s:
                misses += 1
            heapreplace(heap, (wait + tokens / rate_of[replica_id], replica_id))
            counts[replica_id] += 1
        result.num_predicted_misses += misses
        for heap in free.values():
            for at, replica_id in heap:
                result.virtual_queues[replica_id] = (counts[replica_id], at)
        result.groups = {g: (int(v[0]), v[1], v[2]) for g, v in groups.items()}
        self._curves = curves
        self.last_pass = result
        return result

    # ---- self-report ------------------------------------------------------------------
    def error_stats(self) -> dict[str, float]:
        errors = list(self._errors)
        return {"estimator_error_median": statistics.median(errors) if errors else math.nan,
                "estimator_error_p90": (statistics.quantiles(errors, n=10)[-1]
                                        if len(errors) >= 10 else math.nan),
                "estimator_scored": float(self.num_scored)}
