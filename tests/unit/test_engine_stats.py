from replicas.engine_stats import ThroughputWindow


def test_throughput_counts_busy_time_only():
    w = ThroughputWindow(window_s=30)
    t = 0.0
    w.add(t, 0, busy=False)
    for _ in range(10):  # 10 busy steps of 0.1 s, 4 tokens each: 40 tokens/s
        t += 0.1
        w.add(t, 4, busy=True)
    t += 20  # idle gap: not counted as busy time
    w.add(t, 0, busy=False)
    assert abs(w.tokens_per_s() - 40.0) < 1e-6
    assert w.total_tokens == 40


def test_window_forgets_old_samples():
    w = ThroughputWindow(window_s=5)
    w.add(0.0, 0, busy=False)
    w.add(0.5, 10, busy=True)
    w.add(10.0, 0, busy=False)
    assert w.tokens_per_s() == 0.0
