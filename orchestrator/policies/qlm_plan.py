"""QLM re-plan: assign request groups to replicas' virtual queues with a small MILP.

Source: QLM (Patke et al., "Queue Management for SLO-Oriented Large Language Model
Serving", SoCC 2024) and ``design/ALGORITHMS.md`` § QLM. The global queue holds request
groups (same model and SLO class); each replica has a virtual queue of groups. When the
waiting-time estimator predicts a miss, the planner re-assigns every group to one virtual
queue, minimising total lateness plus a model-swap cost. The paper solved this with
Gurobi; here it is a mixed-integer program for scipy's HiGHS ``milp``.

Model (one function, :func:`completion_times`, shared by all three planners). Group ``g``
has ``n_g`` requests, ``w_g`` predicted output tokens and a deadline ``d_g`` seconds from
now; replica ``r`` has throughput ``Θ_r`` tokens/s and a backlog of ``b_r`` seconds. On a
replica, groups run earliest-deadline-first, ties by key (:attr:`PlanGroup.edf_key`)::

    C[g,r]     = b_r + Σ_{g' on r, edf(g') <= edf(g)} w_g' / Θ_r  +  s·[model_g != model_r]
    lateness_g = max(0, C[g, r(g)] - d_g)
    objective  = Σ_g n_g · lateness_g  +  s · #{g : model_g != model_r(g)}

with ``s = swap_cost_s``. A group may go to a replica serving another model only when
``allow_model_swap`` (augserve's dispatch never swaps models, so :class:`QlmPlanner`
plans with it off; the term is kept as the paper states it). Simplification: the swap
delays only the group that needs it, not the groups behind it, and is charged once per
mismatched (group, replica) pair.

Program: binary ``x[g,r]`` (upper bound 0 for forbidden pairs), continuous ``L_g >= 0``::

    min  Σ_g n_g L_g + s Σ_{mismatched (g,r)} x[g,r]
    s.t. Σ_r x[g,r] = 1                                              for every g
         L_g >= C[g,r](x) - d_g - M_gr (1 - x[g,r])                  for every allowed (g,r)

``C[g,r](x)`` is linear in the ``x[g',r]`` of the groups ahead of ``g``. The big-M is per
pair, ``M_gr = max(0, b_r + s_gr + Σ_{allowed g', edf(g') <= edf(g)} w_g'/Θ_r - d_g)``, the
largest value ``C[g,r] - d_g`` can take, so the row is slack whenever ``x[g,r] = 0``
(rows with ``M_gr = 0`` can never bind and are dropped). Those rows leave the LP
relaxation near zero, so one valid row per group tightens it: the lateness ``g`` would
have alone on its replica, ``L_g >= Σ_r max(0, b_r + s_gr + w_g/Θ_r - d_g) x[g,r]``
(halves the solve time of 6-12 groups). Groups with no allowed replica are left out.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # scipy is imported when a plan is solved: only QLM pays its start-up
    from scipy.optimize import Bounds, LinearConstraint

logger = logging.getLogger(__name__)

PlanStatus = Literal["optimal", "time_limit", "greedy", "empty"]

# HiGHS stops at a 1e-4 relative gap by default; these programs are small enough to close it.
_MIP_REL_GAP = 1e-9
_MAX_BRUTE_FORCE_ASSIGNMENTS = 1_000_000


def _require_finite(owner: str, field: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{field} must be finite, got {value!r}")


@dataclass(frozen=True, slots=True)
class PlanGroup:
    """A request group of the global queue: same model, same SLO class."""

    key: str
    model: str
    num_requests: int
    work_tokens: float
    """Predicted output tokens of the queued requests (tail margin included by the caller)."""
    deadline_s: float
    """Seconds from now by which the group should be done; negative when already late."""

    def __post_init__(self) -> None:
        owner = f"PlanGroup({self.key!r})"
        if self.num_requests < 1:
            raise ValueError(f"{owner}.num_requests must be >= 1, got {self.num_requests}")
        _require_finite(owner, "work_tokens", self.work_tokens)
        if self.work_tokens < 0:
            raise ValueError(f"{owner}.work_tokens must be >= 0, got {self.work_tokens}")
        _require_finite(owner, "deadline_s", self.deadline_s)

    @property
    def edf_key(self) -> tuple[float, str]:
        """The order groups run in on a replica: earliest deadline first, ties by key."""
        return (self.deadline_s, self.key)


@dataclass(frozen=True, slots=True)
class PlanReplica:
    """A replica's virtual queue as the planner sees it."""

    replica_id: str
    model: str
    """The model loaded now."""
    tokens_per_s: float
    """Measured output throughput Θ for its model."""
    backlog_s: float
    """Time until the work already on the replica drains."""

    def __post_init__(self) -> None:
        owner = f"PlanReplica({self.replica_id!r})"
        _require_finite(owner, "tokens_per_s", self.tokens_per_s)
        if self.tokens_per_s <= 0:
            raise ValueError(f"{owner}.tokens_per_s must be > 0, got {self.tokens_per_s}")
        _require_finite(owner, "backlog_s", self.backlog_s)
        if self.backlog_s < 0:
            raise ValueError(f"{owner}.backlog_s must be >= 0, got {self.backlog_s}")


@dataclass(frozen=True, slots=True)
class Plan:
    assignment: dict[str, str]
    """Group key -> replica id; groups with no allowed replica are absent."""
    lateness_s: dict[str, float]
    """Group key -> predicted lateness (>= 0) under the plan, from :func:`completion_times`."""
    objective: float
    status: PlanStatus
    """How the plan was found: ``optimal``, ``time_limit`` (best found in time), ``greedy``
    (the solver gave no better solution) or ``empty`` (no group has an allowed replica)."""
    solve_ms: float


def _validate(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
              swap_cost_s: float) -> None:
    keys = [g.key for g in groups]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"PlanGroup.key must be unique, duplicated: {dup}")
    ids = [r.replica_id for r in replicas]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"PlanReplica.replica_id must be unique, duplicated: {dup}")
    if not (math.isfinite(swap_cost_s) and swap_cost_s >= 0):
        raise ValueError(f"swap_cost_s must be finite and >= 0, got {swap_cost_s!r}")


def _allowed(group: PlanGroup, replica: PlanReplica, allow_model_swap: bool) -> bool:
    return allow_model_swap or group.model == replica.model


def _swap_s(group: PlanGroup, replica: PlanReplica, swap_cost_s: float) -> float:
    return swap_cost_s if group.model != replica.model else 0.0


def _own_s(group: PlanGroup, replica: PlanReplica, swap_cost_s: float) -> float:
    """Completion of ``group`` on ``replica`` with nothing ahead of it but the backlog."""
    return (replica.backlog_s + _swap_s(group, replica, swap_cost_s)
            + group.work_tokens / replica.tokens_per_s)


def _completion_times(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
                      assignment: Mapping[str, str], swap_cost_s: float) -> dict[str, float]:
    by_id = {r.replica_id: r for r in replicas}
    queued: dict[str, list[PlanGroup]] = {}
    for g in groups:
        if g.key in assignment:
            queued.setdefault(assignment[g.key], []).append(g)
    done: dict[str, float] = {}
    for replica_id, on_replica in queued.items():
        r = by_id[replica_id]
        drained_tokens = 0.0
        for g in sorted(on_replica, key=lambda g: g.edf_key):
            drained_tokens += g.work_tokens
            done[g.key] = r.backlog_s + drained_tokens / r.tokens_per_s + _swap_s(g, r, swap_cost_s)
    return {g.key: done[g.key] for g in groups if g.key in done}


def _check_assignment(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
                      assignment: Mapping[str, str]) -> None:
    keys = {g.key for g in groups}
    ids = {r.replica_id for r in replicas}
    for key, replica_id in assignment.items():
        if key not in keys:
            raise ValueError(f"assignment names unknown group key {key!r}")
        if replica_id not in ids:
            raise ValueError(f"assignment names unknown replica_id {replica_id!r}")


def completion_times(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
                     assignment: Mapping[str, str], swap_cost_s: float) -> dict[str, float]:
    """Seconds from now until each assigned group finishes (see the module docstring)."""
    _validate(groups, replicas, swap_cost_s)
    _check_assignment(groups, replicas, assignment)
    return _completion_times(groups, replicas, assignment, swap_cost_s)


def _evaluate(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
              assignment: Mapping[str, str], swap_cost_s: float
              ) -> tuple[dict[str, float], float]:
    """Lateness per assigned group and the objective; groups not assigned do not count."""
    done = _completion_times(groups, replicas, assignment, swap_cost_s)
    by_id = {r.replica_id: r for r in replicas}
    lateness: dict[str, float] = {}
    total = 0.0
    for g in groups:
        if g.key not in done:
            continue
        lateness[g.key] = max(0.0, done[g.key] - g.deadline_s)
        total += g.num_requests * lateness[g.key]
        total += _swap_s(g, by_id[assignment[g.key]], swap_cost_s)
    return lateness, total


def objective(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
              assignment: Mapping[str, str], swap_cost_s: float) -> float:
    """Σ num_requests · lateness + swap_cost_s per mismatched pair, over assigned groups."""
    _validate(groups, replicas, swap_cost_s)
    _check_assignment(groups, replicas, assignment)
    return _evaluate(groups, replicas, assignment, swap_cost_s)[1]


def _make_plan(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
               assignment: dict[str, str], swap_cost_s: float, status: PlanStatus,
               started_s: float) -> Plan:
    lateness, total = _evaluate(groups, replicas, assignment, swap_cost_s)
    return Plan(assignment=assignment, lateness_s=lateness, objective=total, status=status,
                solve_ms=(time.perf_counter() - started_s) * 1e3)


def _greedy_assignment(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
                       swap_cost_s: float, allow_model_swap: bool) -> dict[str, str]:
    queued_tokens = {r.replica_id: 0.0 for r in replicas}
    assignment: dict[str, str] = {}
    for g in sorted(groups, key=lambda g: g.edf_key):
        options = [r for r in replicas if _allowed(g, r, allow_model_swap)]
        if not options:
            continue
        # Groups come in EDF order, so g runs after everything already placed on r.
        best = min(options, key=lambda r: _own_s(g, r, swap_cost_s)
                   + queued_tokens[r.replica_id] / r.tokens_per_s)
        queued_tokens[best.replica_id] += g.work_tokens
        assignment[g.key] = best.replica_id
    return assignment


def plan_greedy(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica], *,
                swap_cost_s: float, allow_model_swap: bool) -> Plan:
    """Groups in EDF order, each to the replica that finishes it soonest (ties: the
    earlier replica in ``replicas``)."""
    started_s = time.perf_counter()
    _validate(groups, replicas, swap_cost_s)
    assignment = _greedy_assignment(groups, replicas, swap_cost_s, allow_model_swap)
    return _make_plan(groups, replicas, assignment, swap_cost_s,
                      "greedy" if assignment else "empty", started_s)


def plan_brute_force(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica], *,
                     swap_cost_s: float, allow_model_swap: bool) -> Plan:
    """Enumerate every assignment (for tests and tiny instances); first optimum wins."""
    started_s = time.perf_counter()
    _validate(groups, replicas, swap_cost_s)
    options = [(g, [r.replica_id for r in replicas if _allowed(g, r, allow_model_swap)])
               for g in groups]
    options = [(g, ids) for g, ids in options if ids]
    if not options:
        return _make_plan(groups, replicas, {}, swap_cost_s, "empty", started_s)
    num_assignments = math.prod(len(ids) for _, ids in options)
    if num_assignments > _MAX_BRUTE_FORCE_ASSIGNMENTS:
        raise ValueError(f"groups x replicas too large for brute force: {num_assignments} "
                         f"assignments > {_MAX_BRUTE_FORCE_ASSIGNMENTS}")
    best: dict[str, str] = {}
    best_value = math.inf
    for choice in itertools.product(*(ids for _, ids in options)):
        assignment = {g.key: replica_id for (g, _), replica_id in zip(options, choice)}
        value = _evaluate(groups, replicas, assignment, swap_cost_s)[1]
        if value < best_value:
            best, best_value = assignment, value
    return _make_plan(groups, replicas, best, swap_cost_s, "optimal", started_s)


@dataclass(frozen=True, slots=True)
class _Program:
    c: np.ndarray
    integrality: np.ndarray
    bounds: Bounds
    constraints: LinearConstraint


def _build_program(ordered: Sequence[PlanGroup], replicas: Sequence[PlanReplica],
                   swap_cost_s: float, allow_model_swap: bool) -> _Program:
    """Variables: x[i,j] at ``i*R + j`` for groups ``ordered`` (EDF order), then L_i."""
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.sparse import coo_array
    num_groups, num_replicas = len(ordered), len(replicas)
    num_x = num_groups * num_replicas
    c = np.zeros(num_x + num_groups)
    upper = np.concatenate([np.zeros(num_x), np.full(num_groups, np.inf)])
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower_rhs: list[float] = []
    upper_rhs: list[float] = []

    def add_row(coefficients: list[tuple[int, float]], lb: float, ub: float) -> None:
        row = len(lower_rhs)
        for col, val in coefficients:
            rows.append(row)
            cols.append(col)
            vals.append(val)
        lower_rhs.append(lb)
        upper_rhs.append(ub)

    allowed = [[_allowed(g, r, allow_model_swap) for r in replicas] for g in ordered]
    for i, g in enumerate(ordered):
        c[num_x + i] = g.num_requests
        for j, r in enumerate(replicas):
            if allowed[i][j]:
                upper[i * num_replicas + j] = 1.0
                c[i * num_replicas + j] = _swap_s(g, r, swap_cost_s)
        add_row([(i * num_replicas + j, 1.0) for j in range(num_replicas) if allowed[i][j]],
                1.0, 1.0)
        alone = [(i * num_replicas + j, -max(0.0, _own_s(g, r, swap_cost_s) - g.deadline_s))
                 for j, r in enumerate(replicas) if allowed[i][j]]
        add_row([(num_x + i, 1.0), *alone], 0.0, np.inf)

    for j, r in enumerate(replicas):
        ahead_s = 0.0  # Σ w/Θ of the allowed groups ahead of group i on replica j
        for i, g in enumerate(ordered):
            if not allowed[i][j]:
                continue
            own_s = _own_s(g, r, swap_cost_s)
            big_m = max(0.0, own_s + ahead_s - g.deadline_s)
            if big_m > 0.0:
                # L_i - Σ_{i'<i} (w_i'/Θ_j) x[i',j] - M x[i,j] >= own_s - d_i - M
                coefficients = [(num_x + i, 1.0), (i * num_replicas + j, -big_m)]
                coefficients += [(k * num_replicas + j, -ordered[k].work_tokens / r.tokens_per_s)
                                 for k in range(i) if allowed[k][j]]
                add_row(coefficients, own_s - g.deadline_s - big_m, np.inf)
            ahead_s += g.work_tokens / r.tokens_per_s

    matrix = coo_array((vals, (rows, cols)), shape=(len(lower_rhs), num_x + num_groups))
    integrality = np.concatenate([np.ones(num_x), np.zeros(num_groups)])
    return _Program(c=c, integrality=integrality,
                    bounds=Bounds(np.zeros(num_x + num_groups), upper),
                    constraints=LinearConstraint(matrix.tocsr(), lower_rhs, upper_rhs))


def _decode(x: np.ndarray, ordered: Sequence[PlanGroup],
            replicas: Sequence[PlanReplica]) -> dict[str, str] | None:
    num_replicas = len(replicas)
    assignment: dict[str, str] = {}
    for i, g in enumerate(ordered):
        chosen = [j for j in range(num_replicas) if x[i * num_replicas + j] > 0.5]
        if len(chosen) != 1:
            return None
        assignment[g.key] = replicas[chosen[0]].replica_id
    return assignment


def plan_milp(groups: Sequence[PlanGroup], replicas: Sequence[PlanReplica], *,
              swap_cost_s: float, allow_model_swap: bool, time_limit_s: float,
              node_limit: int | None = None) -> Plan:
    """Solve the program of the module docstring with HiGHS.

    ``node_limit`` (branch-and-bound nodes) makes the result depend on the inputs only:
    the simulator sets it with a time limit that never binds; serving keeps the time limit.

    Status "optimal" when HiGHS proves optimality, "time_limit" when it stops at
    ``time_limit_s`` with an incumbent, "greedy" when it has no solution or its
    incumbent is worse than :func:`plan_greedy`'s, "empty" when no group can be placed.
    """
    from scipy.optimize import milp
    started_s = time.perf_counter()
    _validate(groups, replicas, swap_cost_s)
    if not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise ValueError(f"time_limit_s must be finite and > 0, got {time_limit_s!r}")
    ordered = sorted((g for g in groups
                      if any(_allowed(g, r, allow_model_swap) for r in replicas)),
                     key=lambda g: g.edf_key)
    if not ordered:
        return _make_plan(groups, replicas, {}, swap_cost_s, "empty", started_s)

    program = _build_program(ordered, replicas, swap_cost_s, allow_model_swap)
    result = milp(program.c, integrality=program.integrality, bounds=program.bounds,
                  constraints=program.constraints,
                  options={"time_limit": time_limit_s, "mip_rel_gap": _MIP_REL_GAP,
                           **({"node_limit": node_limit} if node_limit is not None else {})})
    assignment = _decode(result.x, ordered, replicas) if result.x is not None else None
    if assignment is not None and result.status == 0:
        return _make_plan(groups, replicas, assignment, swap_cost_s, "optimal", started_s)
    greedy = _greedy_assignment(groups, replicas, swap_cost_s, allow_model_swap)
    if assignment is None:
        logger.warning("QLM plan: HiGHS gave no solution (status %s: %s); using greedy",
                       result.status, result.message)
        return _make_plan(groups, replicas, greedy, swap_cost_s, "greedy", started_s)
    if (_evaluate(groups, replicas, greedy, swap_cost_s)[1]
            < _evaluate(groups, replicas, assignment, swap_cost_s)[1]):
        return _make_plan(groups, replicas, greedy, swap_cost_s, "greedy", started_s)
    return _make_plan(groups, replicas, assignment, swap_cost_s, "time_limit", started_s)
