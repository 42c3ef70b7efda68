"""Features and dialogues of a record list: the feature cache, dialogue grouping and subsets.

``FeatureStore`` holds each record's model input exactly as the runtime feeds it:
``hbaf.features.utterance_features`` (float32, cut to the contract's frame limit), computed
once (in parallel) and cached on disk next to the manifest. Training, calibration, the
benchmark and the analyses all read features through it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from hbaf.contract import FEATURE_DIM
from hbaf.data.records import Record
from hbaf.errors import HBAFError
from hbaf.features import features_for
from hbaf.io import atomic_path

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 2  # 2: float32, the dtype the runtime feeds (1 stored float16)


def _feature_job(path: str) -> np.ndarray:
    return features_for(path)


class FeatureStore:
    """``utterance_features`` of a list of records, computed once (in parallel) and cached on disk."""

    def __init__(self, records: Sequence[Record], cache_file: str | Path | None = None, workers: int | None = None):
        self.paths = [r.audio for r in records]
        self.feats: list[np.ndarray] = []
        key = self._key()
        if cache_file and Path(cache_file).exists() and self._load(Path(cache_file), key):
            return
        self._compute(workers)
        if cache_file:
            self._save(Path(cache_file), key)

    def _key(self) -> str:
        h = hashlib.sha256(f"v{FEATURE_CACHE_VERSION}".encode())
        for p in self.paths:
            st = os.stat(p) if os.path.exists(p) else None
            h.update(f"{p}|{st.st_size if st else -1}|{int(st.st_mtime) if st else -1}\n".encode())
        return h.hexdigest()

    def _compute(self, workers: int | None) -> None:
        workers = workers or min(os.cpu_count() or 1, 8)
        # the bar is a context manager so that it is cleared before an error message is printed
        with tqdm(total=len(self.paths), desc="features", unit="utt", leave=False) as bar:
            if workers > 1 and len(self.paths) > 64:
                with ProcessPoolExecutor(workers) as pool:
                    for f in pool.map(_feature_job, self.paths, chunksize=32):
                        self.feats.append(f)
                        bar.update()
            else:
                for p in self.paths:
                    self.feats.append(_feature_job(p))
                    bar.update()

    def _load(self, path: Path, key: str) -> bool:
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return False
                flat, offsets = z["flat"], z["offsets"]
        except (OSError, ValueError, KeyError):
            log.warning("feature cache %s unreadable; recomputing", path)
            return False
        self.feats = [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return len(self.feats) == len(self.paths)

    def _save(self, path: Path, key: str) -> None:
        offsets = np.cumsum([0] + [f.shape[0] for f in self.feats])
        flat = np.concatenate(self.feats) if self.feats else np.zeros((0, FEATURE_DIM), np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), flat=flat, offsets=offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.feats[i]

    def __len__(self) -> int:
        return len(self.feats)


class SubStore:
    """A view of ``store`` through a list of indices."""

    def __init__(self, store: FeatureStore, idx: Sequence[int]):
        self.store, self.idx = store, list(idx)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store[self.idx[i]]

    def __len__(self) -> int:
        return len(self.idx)


def feature_cache_path(manifest: str | Path, records: Sequence[Record] | None = None, tag: str | None = None) -> Path:
    """Where a manifest's features are cached; a subset (``records`` + ``tag``) gets its own file
    so that it never clobbers the whole-manifest cache."""
    m = Path(manifest)
    base = m.parent / ".hbaf_cache" / f"{m.stem}.features.npz"
    if records is None:
        return base
    h = hashlib.sha256("\n".join(r.audio for r in records).encode()).hexdigest()[:12]
    return base.with_name(f"{m.stem}.{tag or 'subset'}-{h}.features.npz")


def corpus_manifest(name: str) -> Path:
    """The manifest of a built corpus, by name (``meld-tts``) or folder."""
    from hbaf.data.meld_tts import default_corpus_dir

    p = Path(name)
    folder = p if p.is_dir() else default_corpus_dir(name)
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        raise HBAFError(f"corpus '{name}' is not built ({manifest} missing); run `hbaf make-corpus --out {folder}` first")
    return manifest


# ----------------------------------------------------------------------------- dialogues


def group_dialogues(records: Sequence[Record]) -> list[list[int]]:
    """Indices of ``records`` grouped by (split, dialogue), each group ordered by position."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.split, r.dialogue), []).append(i)
    return [sorted(g, key=lambda i: records[i].index) for g in groups.values()]


def take_dialogues(records: Sequence[Record], n: int, *, splits: Sequence[str] | None = None,
                   seed: int | None = None) -> list[Record]:
    """Whole dialogues (in order) from ``records`` until ``n`` utterances; the last one is cut to fit.

    ``splits``: preference order of splits to draw from (the first non-empty one is used;
    None = all records). ``seed``: shuffle the dialogues (seeded) instead of file order.
    Returns the chosen records, dialogues contiguous and in position order.
    """
    pool = list(records)
    if splits:
        for s in splits:
            chosen = [r for r in records if r.split == s]
            if chosen:
                pool = chosen
                break
    groups = group_dialogues(pool)
    if seed is not None:
        random.Random(seed).shuffle(groups)
    out: list[Record] = []
    for g in groups:
        if len(out) >= n:
            break
        out.extend(pool[i] for i in g[: n - len(out)])
    return out


def subset_train(records: Sequence[Record], fraction: float, seed: int) -> list[int]:
    """Indices keeping a seeded ``fraction`` of the training dialogues and every dev/test utterance."""
    if not 0.0 < fraction <= 1.0:
        raise HBAFError(f"--train-fraction must be in (0, 1], got {fraction}")
    dialogues = sorted({r.dialogue for r in records if r.split == "train"})
    random.Random(seed).shuffle(dialogues)
    kept = set(dialogues[: max(1, round(fraction * len(dialogues)))])
    return [i for i, r in enumerate(records) if r.split != "train" or r.dialogue in kept]
