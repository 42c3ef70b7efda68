"""Features and dialogues of a record list: the feature cache, dialogue grouping and subsets.

``FeatureStore`` holds each record's model input exactly as the runtime feeds it:
``hbaf.features.utterance_features`` of the model's feature kind (float32, cut to 10 s),
computed once (in parallel) and cached on disk next to the manifest, one file per kind and
audio condition. Training, calibration, the benchmark and the analyses all read features
through it. A ``condition`` degrades the audio first (hbaf.data.augment): a fixed evaluation
condition such as ``noise-10db``, or ``augment`` (a random training chain, seeded by the file).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from hbaf.audio import load_audio
from hbaf.contract import FEATURE_KIND, feature_format
from hbaf.data.records import Record
from hbaf.errors import HBAFError
from hbaf.features import utterance_features
from hbaf.io import atomic_path

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 3  # 3: one file per feature kind and condition; 2: float32; 1: float16
CLEAN = "clean"
AUGMENT = "augment"  # a random training chain per file (hbaf.data.augment.augment); "augment:2" is a second copy


def augment_condition(copy: int) -> str:
    """The condition of augmented copy ``copy`` (0, 1, ...) of the training clips."""
    return AUGMENT if copy == 0 else f"{AUGMENT}:{copy + 1}"


def _is_augment(condition: str) -> bool:
    return condition == AUGMENT or (condition.startswith(AUGMENT + ":") and condition[len(AUGMENT) + 1:].isdigit())


def _seed_of(path: str) -> int:
    return int.from_bytes(hashlib.sha256(Path(path).name.encode()).digest()[:4], "little")


def condition_audio(wave: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """``wave`` under ``condition``: clean, ``augment`` or a name of hbaf.data.augment.CONDITIONS."""
    if condition == CLEAN:
        return wave
    from hbaf.data import augment

    if _is_augment(condition):
        copy = int(condition.partition(":")[2] or 1)
        return augment.augment(wave, np.random.default_rng([seed, copy]))[0]
    return augment.degrade(wave, condition, seed)


def _feature_job(job: tuple[str, str, str]) -> np.ndarray:
    path, kind, condition = job
    return utterance_features(condition_audio(load_audio(path), condition, _seed_of(path)), kind)


def _init_worker(threads: int) -> None:
    os.environ["HBAF_ENCODER_THREADS"] = str(threads)


class FeatureStore:
    """``utterance_features`` of a list of records, computed once (in parallel) and cached on disk."""

    def __init__(self, records: Sequence[Record], cache_file: str | Path | None = None, workers: int | None = None,
                 kind: str = FEATURE_KIND, condition: str = CLEAN):
        self.paths = [r.audio for r in records]
        self.kind, self.condition = feature_format(kind).kind, condition
        if condition != CLEAN and not _is_augment(condition):
            from hbaf.data.augment import CONDITIONS

            if condition not in CONDITIONS:
                raise HBAFError(f"unknown audio condition {condition!r}; choose clean, augment or one of {', '.join(CONDITIONS)}")
        self.feats: list[np.ndarray] = []
        key = self._key()
        if cache_file and Path(cache_file).exists() and self._load(Path(cache_file), key):
            return
        self._compute(workers)
        if cache_file:
            self._save(Path(cache_file), key)

    @classmethod
    def from_cache(cls, records: Sequence[Record], cache_file: str | Path, kind: str = FEATURE_KIND,
                   condition: str = CLEAN) -> "FeatureStore | None":
        """The store of ``records`` if ``cache_file`` holds exactly their features; None otherwise
        (nothing is computed)."""
        store = cls.__new__(cls)
        store.paths = [r.audio for r in records]
        store.kind, store.condition, store.feats = feature_format(kind).kind, condition, []
        path = Path(cache_file)
        return store if path.exists() and store._load(path, store._key()) else None

    @classmethod
    def from_features(cls, records: Sequence[Record], feats: Sequence[np.ndarray], cache_file: str | Path | None = None,
                      kind: str = FEATURE_KIND, condition: str = CLEAN) -> "FeatureStore":
        """The store of ``records`` with features computed elsewhere (``feats[i]`` of record i, of
        ``kind``): one encoder pass gives every layer of a clip, so a study computes them once and
        files each kind's cache here, where ``hbaf train --features KIND`` finds it."""
        fmt = feature_format(kind)
        if len(feats) != len(records):
            raise HBAFError(f"{len(feats)} feature arrays for {len(records)} records; compute one per record")
        bad = next((np.shape(f) for f in feats if np.ndim(f) != 2 or np.shape(f)[1] != fmt.dim), None)
        if bad is not None:
            raise HBAFError(f"features of shape {bad} are not {kind} features [T, {fmt.dim}]; compute them with utterance_features")
        store = cls.__new__(cls)
        store.paths = [r.audio for r in records]
        store.kind, store.condition = fmt.kind, condition
        store.feats = [np.ascontiguousarray(f, dtype=np.float32) for f in feats]
        if cache_file:
            store._save(Path(cache_file), store._key())
        return store

    def _key(self) -> str:
        h = hashlib.sha256(f"v{FEATURE_CACHE_VERSION}|{self.kind}|{self.condition}".encode())
        for p in self.paths:
            st = os.stat(p) if os.path.exists(p) else None
            h.update(f"{p}|{st.st_size if st else -1}|{int(st.st_mtime) if st else -1}\n".encode())
        return h.hexdigest()

    def _compute(self, workers: int | None) -> None:
        workers = workers or min(os.cpu_count() or 1, 8)
        jobs = [(p, self.kind, self.condition) for p in self.paths]
        # the bar is a context manager so that it is cleared before an error message is printed
        with tqdm(total=len(self.paths), desc=f"features ({self.kind}, {self.condition})", unit="utt", leave=False) as bar:
            if workers > 1 and len(self.paths) > 64:
                threads = max(1, (os.cpu_count() or 1) // workers)  # Whisper encoder threads per process
                # spawn, not fork: a process that already runs ONNX Runtime, torch or CTranslate2 thread
                # pools forks children whose first lock acquisition can wait forever
                spawn = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker, initargs=(threads,)) as pool:
                    for f in pool.map(_feature_job, jobs, chunksize=16):
                        self.feats.append(f)
                        bar.update()
            else:
                for job in jobs:
                    self.feats.append(_feature_job(job))
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
        flat = np.concatenate(self.feats) if self.feats else np.zeros((0, feature_format(self.kind).dim), np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, key=np.array(key), flat=flat, offsets=offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.feats[i]

    def __len__(self) -> int:
        return len(self.feats)


def manifest_subset(manifest: str | Path, records: Sequence[Record], kind: str = FEATURE_KIND,
                    condition: str = CLEAN) -> "SubStore | None":
    """``records``' features out of the whole manifest's cache (a training run writes it) when it
    is current; None when there is none (nothing is computed)."""
    from hbaf.data.manifest import load_manifest

    full = feature_cache_path(manifest, kind=kind, condition=condition)
    if not full.exists():
        return None
    everything = load_manifest(manifest)
    where = {r.audio: i for i, r in enumerate(everything)}
    if any(r.audio not in where for r in records):
        return None
    store = FeatureStore.from_cache(everything, full, kind, condition)
    return SubStore(store, [where[r.audio] for r in records]) if store is not None else None


class SubStore:
    """A view of ``store`` through a list of indices."""

    def __init__(self, store: FeatureStore, idx: Sequence[int]):
        self.store, self.idx = store, list(idx)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store[self.idx[i]]

    def __len__(self) -> int:
        return len(self.idx)


def feature_cache_path(manifest: str | Path, records: Sequence[Record] | None = None, tag: str | None = None,
                       kind: str = FEATURE_KIND, condition: str = CLEAN) -> Path:
    """Where a manifest's features of ``kind`` under ``condition`` are cached; a subset
    (``records`` + ``tag``) gets its own file so that it never clobbers the whole-manifest cache."""
    m = Path(manifest)
    what = kind if condition == CLEAN else f"{kind}.{condition}"
    base = m.parent / ".hbaf_cache" / f"{m.stem}.{what}.features.npz"
    if records is None:
        return base
    h = hashlib.sha256("\n".join(r.audio for r in records).encode()).hexdigest()[:12]
    return base.with_name(f"{m.stem}.{what}.{tag or 'subset'}-{h}.features.npz")


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


def take_dialogue_indices(records: Sequence[Record], n: int, *, splits: Sequence[str] | None = None,
                          seed: int | None = None) -> list[int]:
    """Positions in ``records`` of whole dialogues (in order) until ``n`` utterances; the last
    one is cut to fit.

    ``splits``: preference order of splits to draw from (the first non-empty one is used;
    None = all records). ``seed``: shuffle the dialogues (seeded) instead of file order.
    Returns the chosen positions, dialogues contiguous and in position order.
    """
    pool = list(range(len(records)))
    if splits:
        for s in splits:
            chosen = [i for i, r in enumerate(records) if r.split == s]
            if chosen:
                pool = chosen
                break
    groups = group_dialogues([records[i] for i in pool])
    if seed is not None:
        random.Random(seed).shuffle(groups)
    out: list[int] = []
    for g in groups:
        if len(out) >= n:
            break
        out.extend(pool[i] for i in g[: n - len(out)])
    return out


def take_dialogues(records: Sequence[Record], n: int, *, splits: Sequence[str] | None = None,
                   seed: int | None = None) -> list[Record]:
    """The records ``take_dialogue_indices`` chooses."""
    return [records[i] for i in take_dialogue_indices(records, n, splits=splits, seed=seed)]


def subset_train(records: Sequence[Record], fraction: float, seed: int) -> list[int]:
    """Indices keeping a seeded ``fraction`` of the training dialogues and every dev/test utterance."""
    if not 0.0 < fraction <= 1.0:
        raise HBAFError(f"--train-fraction must be in (0, 1], got {fraction}")
    dialogues = sorted({r.dialogue for r in records if r.split == "train"})
    random.Random(seed).shuffle(dialogues)
    kept = set(dialogues[: max(1, round(fraction * len(dialogues)))])
    return [i for i, r in enumerate(records) if r.split != "train" or r.dialogue in kept]
