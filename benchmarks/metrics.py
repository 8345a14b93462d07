"""Per-request records and the summary metrics of a run (times in seconds).

- end-to-end = end − arrival; TTFT = first token − arrival (arrival: the time the
  workload schedules the request; the client's own lag counts against the server);
- time per output token = (end − first token − API time after it) / (tokens − 1);
- normalized latency = (end − arrival − API time) / output tokens (LAMPS, INFERCEPT);
- requests never sent (the run was stopped first) are left out and counted as not_sent;
- SLO attainment = share of the sent requests whose class targets hold (TTFT ≤ ttft
  target and end-to-end ≤ e2e target), overall and per class; every failure (rejected
  429, expired 504, any other status, no answer) stays in the denominator as a miss;
- goodput = requests meeting their SLO per second of the run; throughput = completed
  requests per second; output tokens/s over the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.stats import percentile


@dataclass
class RequestRecord:
    request_id: str
    slo: str | None
    arrival_s: float
    scheduled_s: float = 0.0  # when the workload said to send it (client clock)
    send_s: float = 0.0
    first_token_s: float | None = None
    end_s: float | None = None
    status: int = 0  # HTTP status; 0 = never answered (connection error, cancelled)
    error: str | None = None
    output_tokens: int = 0
    expected_tokens: int = 0
    api_time_s: float = 0.0
    turn_tokens: list[int] = field(default_factory=list)
    expected_turn_tokens: list[int] = field(default_factory=list)
    chunk_times_s: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.end_s is not None

    @property
    def start_s(self) -> float:
        """The request's arrival: when the workload said to send it (so that a client
        that falls behind cannot hide latency), else when it was sent."""
        return self.scheduled_s or self.send_s

    @property
    def sent(self) -> bool:
        return self.send_s > 0

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.start_s

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.first_token_s is None or self.output_tokens < 2:
            return None
        span = self.end_s - self.first_token_s - self.api_time_s  # type: ignore[operator]
        return max(span, 0.0) / (self.output_tokens - 1)

    @property
    def normalized_latency_s(self) -> float | None:
        if not self.ok or self.output_tokens == 0:
            return None
        return max(self.e2e_s - self.api_time_s, 0.0) / self.output_tokens  # type: ignore[operator]

    def meets(self, target: dict[str, float | None] | None) -> bool:
        if not self.ok:
            return False
        if not target:
            return True
        ttft, e2e = target.get("ttft_s"), target.get("e2e_s")
        if ttft is not None and (self.ttft_s is None or self.ttft_s > ttft):
            return False
        return e2e is None or self.e2e_s <= e2e  # type: ignore[operator]

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("chunk_times_s", "chunk_tokens", "turn_tokens", "expected_turn_tokens",
                    "scheduled_s"):
            d.pop(key)
        d.update(ok=self.ok, e2e_s=self.e2e_s, ttft_s=self.ttft_s, tpot_s=self.tpot_s,
                 normalized_latency_s=self.normalized_latency_s,
                 turns_as_asked=self.turn_tokens == self.expected_turn_tokens)
        return d


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    return percentile(xs, q) if xs else None


def summarize(records: list[RequestRecord], slo_targets: dict[str, dict[str, float | None]],
              duration_s: float) -> dict[str, Any]:
    not_sent = sum(1 for r in records if not r.sent)
    records = [r for r in records if r.sent]
    ok = [r for r in records if r.ok]
    e2e = [r.e2e_s for r in ok if r.e2e_s is not None]  # every completed one has it
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    norm = [r.normalized_latency_s for r in ok if r.normalized_latency_s is not None]
    met = [r for r in records if r.meets(slo_targets.get(r.slo or "", None))]
    per_class: dict[str, float] = {}
    failed_per_class: dict[str, int] = {}
    for c in sorted({r.slo or "" for r in records}):
        rs = [r for r in records if (r.slo or "") == c]  # failures included: they are misses
        per_class[c or "none"] = sum(r.meets(slo_targets.get(c)) for r in rs) / len(rs)
        failed_per_class[c or "none"] = sum(not r.ok for r in rs)
    duration = max(duration_s, 1e-9)
    return {
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "mean_e2e_s": _mean(e2e), "p50_e2e_s": _pct(e2e, 50), "p90_e2e_s": _pct(e2e, 90),
        "p99_e2e_s": _pct(e2e, 99),
        "mean_ttft_s": _mean(ttft), "p99_ttft_s": _pct(ttft, 99),
        "mean_tpot_s": _mean(tpot), "mean_normalized_latency_s": _mean(norm),
        "slo_attainment": len(met) / len(records) if records else 0.0,
        "slo_attainment_per_class": per_class,
        "goodput_rps": len(met) / duration,
        "throughput_rps": len(ok) / duration,
        "output_tokens_per_s": sum(r.output_tokens for r in ok) / duration,
        "failures_by_status": dict(Counter(str(r.status) for r in records if not r.ok)),
        "failed_per_class": failed_per_class,
        "not_sent": not_sent,
        "duration_s": duration_s,
    }
