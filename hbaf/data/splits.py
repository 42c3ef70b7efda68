"""Seeded group-level train/dev/test splits.

A *group* is the unit that must not be divided between splits: a speaker for a
speaker-independent split, a dialogue for a dialogue-level one. Groups are
assigned greedily, in a seeded random order, to the split whose fill ratio
(utterances held / utterances wanted) stays lowest after adding the group. This
keeps the utterance counts close to the requested fractions while a single
large group (a main character with many lines) lands where it overshoots least.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Iterable, Mapping, Sequence

from hbaf.data.records import SPLITS

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "dev": 0.1, "test": 0.1}


def assign_groups(
    sizes: Mapping[str, int],
    *,
    seed: int = 0,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
) -> dict[str, str]:
    """Map each group name to a split name, keeping whole groups together.

    ``sizes`` maps a group to its utterance count; ``fractions`` maps split names
    to the wanted share of utterances (they need not sum to 1). Deterministic for
    a given ``seed`` and set of groups (input order does not matter). Every split
    with a positive fraction gets at least one group when there are enough groups.
    """
    splits = [s for s in fractions if fractions[s] > 0]
    if not splits:
        raise ValueError("fractions must give at least one split a positive share")
    total = sum(sizes.values())
    share = sum(fractions[s] for s in splits)
    target = {s: max(total * fractions[s] / share, 1e-9) for s in splits}
    groups = sorted(sizes)
    rng = random.Random(seed)
    rng.shuffle(groups)

    counts = {s: 0 for s in splits}
    members: dict[str, list[str]] = {s: [] for s in splits}
    out: dict[str, str] = {}
    for g in groups:
        n = sizes[g]
        # Lowest fill ratio after adding; ties go to the split listed first.
        best = min(splits, key=lambda s: ((counts[s] + n) / target[s], splits.index(s)))
        counts[best] += n
        members[best].append(g)
        out[g] = best

    # With enough groups no split stays empty: move over the group (from the
    # split that has the most groups) whose size best matches the empty split's target.
    for s in splits:
        if members[s]:
            continue
        donors = [d for d in splits if len(members[d]) > 1]
        if not donors:
            break
        donor = max(donors, key=lambda d: (len(members[d]), -splits.index(d)))
        g = min(members[donor], key=lambda m: (abs(sizes[m] - target[s]), members[donor].index(m)))
        members[donor].remove(g)
        members[s].append(g)
        counts[donor] -= sizes[g]
        counts[s] += sizes[g]
        out[g] = s
    return out


def group_split(
    keys: Sequence[str],
    *,
    seed: int = 0,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
) -> list[str]:
    """One split name per item, where ``keys[i]`` is item i's group; whole groups stay together."""
    mapping = assign_groups(Counter(keys), seed=seed, fractions=fractions)
    return [mapping[k] for k in keys]


def auto_split(
    speakers: Sequence[str],
    dialogues: Sequence[str],
    *,
    seed: int = 0,
    source: str = "the data",
) -> list[str]:
    """Speaker-independent ~80/10/10 split; dialogue-level when there are fewer than 3 speakers.

    With fewer than 3 groups of either kind, everything goes to train (and a warning says so).
    """
    if len(speakers) != len(dialogues):
        raise ValueError("speakers and dialogues must have the same length")
    n_speakers = len(set(speakers))
    if n_speakers >= 3:
        return group_split(list(speakers), seed=seed)
    n_dialogues = len(set(dialogues))
    if n_dialogues >= 3:
        log.warning(
            "%s has only %d speaker(s): splitting by dialogue instead, so dev/test are NOT speaker-independent; "
            "give a 'split' field on every line to choose the split yourself",
            source,
            n_speakers,
        )
        return group_split(list(dialogues), seed=seed)
    log.warning(
        "%s has too few speakers (%d) and dialogues (%d) for a train/dev/test split: all %d utterances go to train; "
        "give a 'split' field on every line to choose the split yourself",
        source,
        n_speakers,
        n_dialogues,
        len(speakers),
    )
    return ["train"] * len(speakers)


def split_counts(splits: Iterable[str]) -> dict[str, int]:
    """Utterances per split, in the canonical order (train, dev, test)."""
    c = Counter(splits)
    return {s: c.get(s, 0) for s in SPLITS}
