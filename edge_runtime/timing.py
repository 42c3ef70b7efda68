"""The one latency timer: several callables measured taking turns, and their statistics.

Used by ``hbaf-edge bench`` and by the INT8 report. The callables take turns in ``chunks``
blocks (rotating who goes first), so slow drifts of a shared machine hit all alike; each
block starts after a short pause and ``chunk_warmup`` untimed calls, because with 2+
threads idle ONNX Runtime and OpenMP workers keep spinning for a while after a call and
would steal the next callable's cores. The garbage collector is off while timing.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

CHUNKS = 5
SETTLE_S = 0.05  # pause before each timing block
CHUNK_WARMUP = 2  # untimed calls at the start of each block


def latency_stats(ms: Sequence[float], batch: int = 1) -> dict[str, float]:
    """Percentiles (numpy's linear interpolation) and throughput of one callable."""
    a = np.asarray(ms, dtype=np.float64)
    mean = float(a.mean())
    return {
        "runs": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": mean,
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "std_ms": float(a.std()),
        "throughput_utt_s": batch * 1000.0 / mean if mean > 0 else float("nan"),
    }


def time_in_turns(
    calls: Mapping[str, Callable[[], Any]],
    *,
    runs: int = 100,
    warmup: int = 10,
    chunks: int = CHUNKS,
    settle_s: float = SETTLE_S,
    chunk_warmup: int = CHUNK_WARMUP,
    on_error: Callable[[str, BaseException], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds of ``runs`` calls of each callable, measured taking turns (module docstring).

    ``on_error(name, err)`` decides what a failing callable does: return True to drop it and go
    on, False (or no handler) to raise. ``progress(n)`` is called after every ``n`` calls.
    """
    active = list(calls)
    for name in list(active):
        try:
            for _ in range(warmup):
                calls[name]()
                if progress:
                    progress(1)
        except Exception as err:
            if on_error is None or not on_error(name, err):
                raise
            active.remove(name)
    chunks = max(1, min(chunks, runs))
    sizes = [runs // chunks + (1 if i < runs % chunks else 0) for i in range(chunks)]
    times: dict[str, list[float]] = {name: [] for name in active}
    gc.collect()
    gc.disable()
    try:
        for c, size in enumerate(sizes):
            shift = c % max(1, len(active))
            for name in active[shift:] + active[:shift]:
                if name not in times:
                    continue
                fn = calls[name]
                try:
                    time.sleep(settle_s)
                    for _ in range(chunk_warmup):
                        fn()
                    for _ in range(size):
                        t0 = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - t0) * 1000.0)
                        if progress:
                            progress(1)
                except Exception as err:
                    if on_error is None or not on_error(name, err):
                        raise
                    del times[name]
    finally:
        gc.enable()
    return times
