"""Engines that share one machine's cores — this CPU test bed, not a GPU fleet.

On a GPU fleet every replica has its own accelerator: one replica's steps do not slow
another's.  On this machine the three engines of ``hetero-*.yaml``, their replicas'
processes, Ray, Serve and the benchmark client all run on the same cores, so a step costs
more the more engines step at once.  The model is processor sharing: an engine stepping
wants ``engine_cores`` cores, the rest of the app ``background_cores``; when the demand
exceeds the machine's cores, every step stretches by demand ÷ cores.  The profile's step
cost was fitted on runs whose own demand was ``profiled_demand_cores`` (one engine and its
host process), so the stretch is taken relative to that.  Every number is measured
(``cpu.json`` of the real runs); the stretch is fixed when a step starts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SharedCpu:
    num_cores: float
    #: Cores one engine uses while it steps (its core and workers' CPU over its busy time).
    engine_cores: float
    #: Cores the rest uses meanwhile (the replicas' processes, Ray, Serve, the client).
    background_cores: float
    #: Cores in use while the profile's steps were measured (one engine and its host).
    profiled_demand_cores: float

    def __post_init__(self) -> None:
        if not self.num_cores > 0:
            raise ValueError(f"num_cores must be > 0, got {self.num_cores}")
        for name in ("engine_cores", "background_cores", "profiled_demand_cores"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def stretch(self, num_stepping: int) -> float:
        """How much longer than its profiled cost a step takes while ``num_stepping``
        engines (this one included) step at once."""
        def crowding(demand: float) -> float:
            return max(1.0, demand / self.num_cores)

        return (crowding(num_stepping * self.engine_cores + self.background_cores)
                / crowding(self.profiled_demand_cores))


class CpuPool:
    """The machine the engines share: how many step now."""

    def __init__(self, cpu: SharedCpu) -> None:
        self.cpu = cpu
        self.num_stepping = 0

    def begin_step(self) -> float:
        """A step starts; returns its stretch."""
        self.num_stepping += 1
        return self.cpu.stretch(self.num_stepping)

    def end_step(self) -> None:
        if self.num_stepping <= 0:
            raise RuntimeError("a step ended that never began")
        self.num_stepping -= 1
