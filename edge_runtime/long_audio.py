"""Audio longer than the recogniser's encoder window, cut into windows it can hear whole.

Whisper's encoder hears at most one window (10 s on the runtime's short path, 30 s on the
standard one). An utterance longer than that (``--max-utterance-s`` above the window) is
recognised in consecutive pieces of at most one window each, and their texts are joined, so
no word is dropped. Each cut is placed at the quietest moment of the last few seconds before
the window's end (the middle of their quietest 200 ms), where a word is least likely to be
split. ``window_bounds`` is a pure function of the samples.
"""

from __future__ import annotations

import numpy as np

from hbaf.contract import SAMPLE_RATE

HOP = 160  # 10 ms between the positions a cut may take
QUIET_WINDOW = 3200  # 200 ms: a cut goes where 200 ms around it are quietest (a pause, not a stop consonant)
SEARCH_S = 3.0  # a cut is looked for in the last 3 s before a window's end (at most half a window)


def window_bounds(samples: np.ndarray, max_samples: int, *, search_s: float = SEARCH_S) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges that cover ``samples`` end to end, in order, each at most
    ``max_samples`` long. Each inner cut is looked for in the last ``search_s`` seconds (at most
    half a window) before the window would overflow: the middle of the 200 ms there with the least
    energy; where several are equally quiet (digital silence), the middle of the longest such run."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = x.size
    if max_samples < 2 * QUIET_WINDOW:
        raise ValueError(f"a window of {max_samples} samples is too short to cut audio into")
    if n <= max_samples:
        return [(0, n)]
    search = max(QUIET_WINDOW, min(int(search_s * SAMPLE_RATE), max_samples // 2))
    csum = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > max_samples:
        end = start + max_samples  # the latest a cut may come
        firsts = np.arange(end - search, end - QUIET_WINDOW + 1, HOP)  # 200 ms stretches inside the search range
        energy = csum[firsts + QUIET_WINDOW] - csum[firsts]
        quiet = energy <= energy.min() * (1 + 1e-6) + 1e-9
        run_start, run_len = _longest_run(quiet)
        middle = firsts[run_start + (run_len - 1) // 2]
        cut = int(middle + QUIET_WINDOW // 2)
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """(first index, length) of the longest run of True in ``flags`` (the first such run on a tie)."""
    best, best_len, run = 0, 0, 0
    for i, flag in enumerate(flags.tolist()):
        run = run + 1 if flag else 0
        if run > best_len:
            best, best_len = i - run + 1, run
    return best, best_len


def join_texts(texts: list[str]) -> str:
    """The windows' transcripts as one text (empty ones left out)."""
    return " ".join(t.strip() for t in texts if t and t.strip())
