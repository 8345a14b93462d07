"""Replica policies: plain Python (no vLLM, no Ray), time passed in.  Shared by the replica,
its vLLM scheduler subclass, the unit tests and a simulator."""

from replicas.policy.policies import (POLICY_NAMES, Outlook, ReplicaPolicy, generation_memory,
                                      make_policy, memory_over_time, outlook_from_extra)
from replicas.policy.profile import OnlineFit, ReplicaProfile, fit_line, profile_from_points
from replicas.policy.starvation import RankKey, StarvationGuard
from replicas.policy.waste import (BatchLoad, InferceptWaste, LampsWaste, Pause, Strategy,
                                   WasteModel)

__all__ = ["POLICY_NAMES", "BatchLoad", "InferceptWaste", "LampsWaste", "OnlineFit", "Outlook",
           "Pause", "RankKey", "ReplicaPolicy", "ReplicaProfile", "StarvationGuard", "Strategy",
           "WasteModel", "fit_line", "generation_memory", "make_policy", "memory_over_time", "outlook_from_extra",
           "profile_from_points"]
