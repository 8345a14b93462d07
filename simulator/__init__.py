"""augserve's discrete-event simulator: the replicas' and the queue manager's own policy
code on a model of vLLM's engine, in simulated time (docs/simulator.md)."""
