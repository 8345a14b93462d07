"""Engines that share one machine's cores — this CPU test bed, not a GPU fleet.

On a GPU fleet every replica has its own accelerator: one replica's steps do not slow
another's.  On this machine the three engines of ``hetero-*.yaml``, their replicas'
processes, Ray, Serve and the benchmark client all run on the same cores, so a step costs
more the more engines step at once.

The model, from what the fleet runs measured (``cpu.json``): the rest of the app — many
small processes that sleep and wake, which Linux's scheduler serves first — takes its
``background_cores``; the engines share what is left equally.  An engine stepping wants
``engine_cores``; when ``k`` engines step and want more than the cores left, every step
stretches by (k × engine_cores) ÷ (cores − background).  The profile's step cost was
measured on runs whose own rest took ``profiled_background_cores``, so the stretch is
taken relative to that run's.  (In the fleet runs the engines got 0.94 cores together and
the rest 1.05 of the 2: what this model says.  Fair sharing of every core among all
demand, tried first, left the simulated fleet 2.5× too fast.)  The stretch is fixed when
a step starts."""

from __future__ import annotations

from dataclasses import dataclass

#: The fewest cores left to the engines, however busy the rest.
MIN_ENGINE_SHARE_CORES = 0.05


@dataclass(frozen=True, slots=True)
class SharedCpu:
    num_cores: float
    #: Cores one engine uses while it steps (its core and workers' CPU over its steps' time).
    engine_cores: float
    #: Cores the rest takes first (the replicas' processes, Ray, Serve, the client).
    background_cores: float
    #: The rest's cores while the profile's steps were measured (one engine's host).
    profiled_background_cores: float

    def __post_init__(self) -> None:
        if not self.num_cores > 0:
            raise ValueError(f"num_cores must be > 0, got {self.num_cores}")
        for name in ("engine_cores", "background_cores", "profiled_background_cores"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def _crowding(self, num_stepping: int, background_cores: float) -> float:
        left = max(self.num_cores - background_cores, MIN_ENGINE_SHARE_CORES)
        return max(1.0, num_stepping * self.engine_cores / left)

    def stretch(self, num_stepping: int) -> float:
        """How much longer than its profiled cost a step takes while ``num_stepping``
        engines (this one included) step at once."""
        return (self._crowding(num_stepping, self.background_cores)
                / self._crowding(1, self.profiled_background_cores))


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
