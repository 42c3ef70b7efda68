"""Warm latency of every runnable backend on every benchmark input, and their agreement on
those identical inputs.

The timing itself is the project's one timer (``edge_runtime.timing.time_in_turns``: warm-up,
chunks taken in rotating turns, a settle pause and untimed calls before each chunk, the
garbage collector off). What is left here is the benchmark's part: fitting each input to each
backend's limits (an input outside them is skipped with the reason), keeping each backend's
first output for the agreement check, and marking a backend that breaks while timed as
failed (the baseline breaking is an error).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bench.backends import fit_feeds
from bench.cases import Case, Family
from bench.evaluation import compare_probs
from bench.lineup import BASELINE, Lineup
from edge_runtime.timing import latency_stats, time_in_turns

Outputs = dict[tuple[str, str], dict[str, np.ndarray]]  # (row key, case key) -> the first outputs


def measure(lineup: Lineup, cases: list[Case], families: dict[str, Family], *, runs: int,
            warmup: int) -> dict[str, dict[str, list[float]]]:
    """Time every runnable row on every case; fills ``row.latency``, ``row.skipped_cases`` and
    ``row.bench_inputs_agreement``. Returns the timed calls: case key -> row key -> ms."""
    from tqdm import tqdm

    fitted: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for case in cases:
        for row in lineup.runnable():
            feeds, why = fit_feeds(case.feeds[row.family], lineup.backends[row.key])
            if feeds is None:
                row.skipped_cases[case.key] = why or "outside its limits"
            else:
                fitted[(row.key, case.key)] = feeds
    raw: dict[str, dict[str, list[float]]] = {}
    outputs: Outputs = {}
    with tqdm(total=len(fitted) * (runs + warmup), desc="latency", unit="call", leave=False) as bar:
        for case in cases:
            times = _time_case(lineup, case, fitted, outputs, runs=runs, warmup=warmup, progress=bar.update)
            for key, ms in times.items():
                row = lineup.row(key)
                if row.ok and ms:
                    row.latency[case.key] = latency_stats(ms, case.batch)
                    raw.setdefault(case.key, {})[key] = [round(t, 4) for t in ms]
    _bench_agreement(lineup, cases, families, outputs)
    return raw


def _time_case(lineup: Lineup, case: Case, fitted: dict[tuple[str, str], dict[str, np.ndarray]], outputs: Outputs, *,
               runs: int, warmup: int, progress: Callable[[int], object]) -> dict[str, list[float]]:
    """The rows that fit ``case``, timed taking turns."""
    calls: dict[str, Callable[[], None]] = {}
    done: dict[str, int] = {}
    for row in lineup.runnable():
        if (row.key, case.key) in fitted:
            calls[row.key] = _call(lineup.backends[row.key].run, fitted[(row.key, case.key)], outputs, (row.key, case.key), done)

    def on_error(key: str, err: BaseException) -> bool:
        if key == BASELINE:
            return False
        stage = f"warm-up on {case.key}" if done[key] < warmup else f"timing {case.key}"
        lineup.row(key).fail(stage, err)
        return True

    return time_in_turns(calls, runs=runs, warmup=warmup, on_error=on_error, progress=progress)


def _call(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], feeds: dict[str, np.ndarray], outputs: Outputs,
          where: tuple[str, str], done: dict[str, int]) -> Callable[[], None]:
    """One backend call on its fitted feeds; its first outputs are kept, its calls counted."""
    key = where[0]
    done[key] = 0

    def call() -> None:
        outputs.setdefault(where, run(feeds))
        done[key] += 1

    return call


def _bench_agreement(lineup: Lineup, cases: list[Case], families: dict[str, Family], outputs: Outputs) -> None:
    """Agreement with the family's PyTorch model on the identical benchmark inputs."""
    for row in lineup.rows:
        fam = families.get(row.family)
        if fam is None or row.key == fam.baseline or not row.latency:
            continue
        refs, gots = [], []
        for case in cases:
            ref = outputs.get((fam.baseline, case.key))
            got = outputs.get((row.key, case.key))
            if ref is not None and got is not None:
                refs.append(ref["probs"])
                gots.append(got["probs"])
        if refs:
            row.bench_inputs_agreement = compare_probs(np.concatenate(refs), np.concatenate(gots))
