"""Per-version statistics: successes recorded lock-free from many threads add up exactly, in bulk."""

from __future__ import annotations

import bisect
import threading
import time

import numpy as np

from tensorwire.server.inference.statistics import BATCH_BUCKETS, FOLD_EVERY, LATENCY_BUCKETS_NS, VersionStatistics


def _buckets(bounds: tuple[int, ...], values: list[int]) -> list[int]:
    """The oracle: a value goes to the first bucket whose bound is >= it (Prometheus' `le`), or to +Inf."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    return counts


def test_successes_from_many_threads_add_up_exactly() -> None:
    stats = VersionStatistics()
    rng = np.random.default_rng(7)
    threads, per_thread = 4, FOLD_EVERY * 3 + 17  # folds inline several times, and leaves some pending
    records = [
        [(int(rows), int(a), int(b), int(c), int(q), bool(e)) for rows, a, b, c, q, e in zip(
            rng.integers(1, 5000, per_thread), rng.integers(0, 2_000_000, per_thread), rng.integers(0, 20_000_000, per_thread),
            rng.integers(0, 500_000, per_thread), rng.integers(0, 3_000_000, per_thread), rng.integers(0, 2, per_thread))]
        for _ in range(threads)
    ]
    # bucket bounds themselves must land in their own bucket
    records[0][:3] = [(1, 50_000, 100_000, 0, 0, True), (64, 0, 1_000_000, 0, 0, True), (16384, 0, 0, 0, 0, True)]
    before_ms = time.time_ns() // 1_000_000

    def record(mine: list[tuple[int, int, int, int, int, bool]]) -> None:
        for rows, input_ns, infer_ns, output_ns, queue_ns, executed in mine:
            stats.record_success(rows, input_ns, infer_ns, output_ns, queue_ns, executed)

    workers = [threading.Thread(target=record, args=(mine,)) for mine in records]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats.record_failure(1234, "INVALID_ARGUMENT")

    everything = [r for mine in records for r in mine]
    totals = [r[1] + r[2] + r[3] + r[4] for r in everything]
    proto = stats.to_proto("m", "1")
    assert proto.inference_count == sum(r[0] for r in everything)
    assert proto.execution_count == sum(r[5] for r in everything)
    assert (proto.inference_stats.success.count, proto.inference_stats.success.ns) == (len(everything), sum(totals))
    assert proto.inference_stats.compute_input.ns == sum(r[1] for r in everything)
    assert proto.inference_stats.compute_infer.ns == sum(r[2] for r in everything)
    assert proto.inference_stats.compute_output.ns == sum(r[3] for r in everything)
    assert (proto.inference_stats.queue.count, proto.inference_stats.queue.ns) == (len(everything), sum(r[4] for r in everything))
    assert (proto.inference_stats.fail.count, proto.inference_stats.fail.ns) == (1, 1234)
    assert proto.last_inference >= before_ms

    snapshot = stats.metrics_snapshot()
    assert snapshot["outcomes"] == {"success": len(everything), "INVALID_ARGUMENT": 1}
    assert snapshot["rows"] == proto.inference_count
    assert snapshot["request_ns"] == {"counts": _buckets(LATENCY_BUCKETS_NS, totals), "sum": sum(totals)}
    assert snapshot["compute_ns"] == {"counts": _buckets(LATENCY_BUCKETS_NS, [r[2] for r in everything]), "sum": sum(r[2] for r in everything)}
    assert snapshot["batch_rows"]["counts"] == _buckets(BATCH_BUCKETS, [r[0] for r in everything])


def test_a_read_sees_successes_recorded_just_before() -> None:
    stats = VersionStatistics()
    stats.record_success(3, 10, 20, 30)
    assert stats.to_proto("m", "1").inference_count == 3
    stats.record_success(2, 10, 20, 30)
    assert stats.metrics_snapshot()["rows"] == 5
    assert stats.to_proto("m", "1").inference_stats.success.count == 2
