"""MELD-TTS: a synthetic speech emotion corpus built offline from MELD's dialogues.

The real MELD dialogue texts, speakers and emotion labels (hbaf.data.meld_text) are rendered to
speech by several synthesizer families (espeak-ng, flite, festival; hbaf.data.voices), with
label-dependent prosody (hbaf.data.prosody) and background noise (hbaf.data.synth):

* one family per dialogue (seeded, so a family can be held out by its dialogues), and
  per speaker a voice of that family, distinct within the dialogue;
* whole dialogues are chosen in a seeded order (``select_dialogues``) up to a per-split limit.

This module builds the corpus: selection, rendering in worker threads, and the files a corpus
folder holds (``manifest.jsonl``, ``render_params.jsonl``, ``corpus.json``). Builds are
resumable: complete WAVs are kept. The audio is SYNTHETIC speech and must always be reported
as such (see docs/CORPUS.md).

``GENERATOR_VERSION`` covers everything that shapes a render (text clean-up, voices, prosody,
effects, noise, selection): a change in any of those modules raises it, and a corpus folder built
by another version is refused.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from hbaf.contract import SAMPLE_RATE
from hbaf.data.meld_text import MELD_CSV_DIR, is_speakable, read_meld_csv
from hbaf.data.prosody import DEFAULT_NOISE_SNR_DB, DEFAULT_STRENGTH, EMOTION_PROSODY, RenderParams, render_params
from hbaf.data.records import MELD_LABELS, SPLITS
from hbaf.data.synth import RenderFailure, render_utterance, tool_versions, utterance_name, wav_duration
from hbaf.data.voices import Voice, _require_tools, _seed_int, check_families, dialogue_family, dialogue_voices
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, hbaf_home, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

GENERATOR = "hbaf.data.meld_tts"
GENERATOR_VERSION = "2.0"
MANIFEST_NAME = "manifest.jsonl"
CORPUS_CARD_NAME = "corpus.json"
RENDERS_NAME = "render_params.jsonl"


def default_corpus_dir(name: str = "meld-tts") -> Path:
    """Where corpora live by default: ``$HBAF_HOME/corpora/<name>`` (HBAF_HOME defaults to ~/.cache/hbaf)."""
    return hbaf_home() / "corpora" / name


def select_dialogues(utts: Sequence[dict[str, Any]], limit: int | None, *, seed: int = 0, split: str = "") -> list[dict[str, Any]]:
    """Whole dialogues in a seeded order, adding each one that still fits, until ``limit`` utterances.

    Returns the chosen utterances in (dialogue_id, utterance_id) order. ``limit=None`` keeps all.
    """
    if limit is None:
        return sorted(utts, key=lambda u: (u["dialogue_id"], u["utterance_id"]))
    by_dia: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for u in utts:
        by_dia[int(u["dialogue_id"])].append(u)
    order = sorted(by_dia)
    random.Random(_seed_int(seed, split, "dialogue-order")).shuffle(order)
    chosen: list[int] = []
    total = 0
    for dia in order:
        n = len(by_dia[dia])
        if total + n <= limit:
            chosen.append(dia)
            total += n
            if total == limit:
                break
    out = [u for dia in sorted(chosen) for u in by_dia[dia]]
    return sorted(out, key=lambda u: (u["dialogue_id"], u["utterance_id"]))


def _render_key(strength: float, seed: int, noise_snr_db: tuple[float, float], families: Sequence[str]) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "strength": float(strength), "seed": int(seed),
            "noise_snr_db": [float(noise_snr_db[0]), float(noise_snr_db[1])], "families": list(families)}


def _check_args(limit: int | None, splits: Iterable[str], strength: float, workers: int | None,
                noise_snr_db: tuple[float, float]) -> tuple[list[str], int]:
    splits = list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise HBAFError(f"unknown split(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SPLITS)}")
    if not (0.0 <= float(strength) <= 1.0) or math.isnan(float(strength)):
        raise HBAFError(f"strength must be in [0, 1], got {strength}; e.g. --strength {DEFAULT_STRENGTH}")
    if limit is not None and int(limit) < 1:
        raise HBAFError(f"limit must be a positive number of utterances per split, got {limit}; omit it for the full corpus")
    lo, hi = (float(v) for v in noise_snr_db)
    if not lo <= hi:
        raise HBAFError(f"noise_snr_db must be (low, high) with low <= high, got {noise_snr_db}")
    n_workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise HBAFError(f"workers must be >= 1, got {workers}")
    return splits, n_workers


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    splits: Sequence[str] = SPLITS,
    strength: float = DEFAULT_STRENGTH,
    seed: int = 0,
    workers: int | None = None,
    noise_snr_db: tuple[float, float] = DEFAULT_NOISE_SNR_DB,
    families: Sequence[str] | str | None = None,
) -> Path:
    """Build (or resume) the MELD-TTS corpus in ``out_dir``; returns the path of ``manifest.jsonl``.

    ``limit`` caps utterances per split (whole dialogues, seeded order). Existing complete
    WAVs are kept, so an interrupted build resumes and a rebuild renders nothing. A folder
    built with another seed/strength/noise range is refused (its WAVs would not match).
    Also writes ``corpus.json`` (parameters, counts, durations; "synthetic": true) and
    ``render_params.jsonl`` (each utterance's voice, intensity and effects).
    ``families`` (None: all installed) are the synthesizers; each dialogue gets one of them
    (seeded, roughly equal shares) and its speakers distinct voices of that family.
    """
    split_list, n_workers = _check_args(limit, splits, strength, workers, noise_snr_db)
    noise_snr_db = (float(noise_snr_db[0]), float(noise_snr_db[1]))
    _require_tools()
    fams = check_families(families)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / CORPUS_CARD_NAME
    key = _render_key(strength, seed, noise_snr_db, fams)
    if card_path.exists():
        try:
            old = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HBAFError(f"{card_path} is unreadable; delete {out} or choose another output folder") from err
        old_key = old.get("render_key")
        if old_key != key:
            raise HBAFError(f"{out} holds a MELD-TTS corpus built with other parameters ({old_key}); "
                            f"rebuild with the same --seed/--strength/--families, delete the folder, or choose another --out")
    versions = tool_versions()
    parameters = {"limit": limit, "splits": split_list, "strength": float(strength), "seed": int(seed),
                  "noise_snr_db": list(noise_snr_db), "families": list(fams)}
    write_json_atomic(card_path, {"name": "MELD-TTS", "synthetic": True, "status": "building", "generator": GENERATOR,
                                  "generator_version": GENERATOR_VERSION, "render_key": key, "parameters": parameters,
                                  "tools": versions})

    # Selection.
    selected: list[dict[str, Any]] = []
    skipped_empty: dict[str, int] = {}
    for split in split_list:
        utts = read_meld_csv(split)
        speakable = [u for u in utts if is_speakable(u["text"])]
        skipped_empty[split] = len(utts) - len(speakable)
        selected.extend(select_dialogues(speakable, limit, seed=seed, split=split))

    jobs: list[tuple[dict[str, Any], RenderParams, str]] = []
    by_dia: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for u in selected:
        by_dia[(u["split"], int(u["dialogue_id"]))].append(u)
    voices: dict[tuple[str, int], dict[str, Voice]] = {
        k: dialogue_voices([u["speaker"] for u in us], seed, dialogue_family(seed, k[0], k[1], fams))
        for k, us in by_dia.items()}
    for u in selected:
        rel = f"wav/{u['split']}/{utterance_name(u)}.wav"
        v = voices[(u["split"], int(u["dialogue_id"]))][u["speaker"]]
        jobs.append((u, render_params(u, seed=seed, strength=strength, noise_snr_db=noise_snr_db, voice=v), rel))

    durations: dict[str, float] = {}
    todo: list[tuple[dict[str, Any], RenderParams, str]] = []
    for job in jobs:
        dur = wav_duration(out / job[2])
        if dur is None:
            todo.append(job)
        else:
            durations[job[2]] = dur
    reused = len(jobs) - len(todo)
    log.info("MELD-TTS: %d utterances selected, %d already rendered, %d to render with %d workers",
             len(jobs), reused, len(todo), n_workers)

    t0 = time.perf_counter()
    failures: list[str] = []
    if todo:
        from tqdm.auto import tqdm

        pool = cf.ThreadPoolExecutor(max_workers=n_workers)
        try:
            futs = {pool.submit(render_utterance, u, out / rel, p, seed=seed): rel for u, p, rel in todo}
            with tqdm(total=len(futs), desc="MELD-TTS", unit="utt", dynamic_ncols=True) as bar:
                for fut in cf.as_completed(futs):
                    rel = futs[fut]
                    try:
                        durations[rel] = fut.result()
                    except RenderFailure as err:
                        failures.append(f"{rel}: {err}")
                        log.warning("render failed: %s: %s", rel, err)
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    rendered = len(todo) - len(failures)
    if failures:
        raise HBAFError(f"{len(failures)} of {len(todo)} utterances failed to render (first: {failures[0]}); "
                        f"rerun the same command to retry them (finished ones are kept)")

    # Manifest, per-utterance parameters, corpus card.
    manifest_lines, render_lines = [], []
    counts: dict[str, Counter] = {s: Counter() for s in split_list}
    dur_split: dict[str, float] = {s: 0.0 for s in split_list}
    dialogues: dict[str, set] = {s: set() for s in split_list}
    speakers: dict[str, set] = {s: set() for s in split_list}
    fam_counts: Counter = Counter()
    for u, p, rel in jobs:
        s = u["split"]
        rec = {"audio": rel, "text": u["text"], "label": u["label"], "speaker": u["speaker"],
               "dialogue": f"{s}-{u['dialogue_id']}", "index": int(u["utterance_id"]), "split": s,
               "family": p.family, "voice": p.voice_label}
        manifest_lines.append(json.dumps(rec, ensure_ascii=False))
        render_lines.append(json.dumps({"audio": rel, "duration_s": round(durations[rel], 4), **p.to_dict()}))
        counts[s][u["label"]] += 1
        dur_split[s] += durations[rel]
        dialogues[s].add(u["dialogue_id"])
        speakers[s].add(u["speaker"])
        fam_counts[p.family] += 1
    manifest = out / MANIFEST_NAME
    write_text_atomic(out / RENDERS_NAME, "\n".join(render_lines) + ("\n" if render_lines else ""))
    write_text_atomic(manifest, "\n".join(manifest_lines) + ("\n" if manifest_lines else ""))
    licence = MELD_CSV_DIR / "LICENSE"
    if licence.is_file():
        with atomic_path(out / "LICENSE.meld-text") as tmp:
            shutil.copyfile(licence, tmp)

    total_dur = sum(dur_split.values())
    card = {
        "name": "MELD-TTS",
        "synthetic": True,
        "description": "Synthetic speech: MELD dialogue texts, speakers and emotion labels rendered with "
                       f"{', '.join(fams)} (one family per dialogue, one voice per speaker, label-dependent "
                       "prosody of seeded strength applied by sox, background noise).",
        "status": "complete",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "render_key": key,
        "parameters": parameters,
        "tools": versions,
        "sample_rate": SAMPLE_RATE,
        "labels": list(MELD_LABELS),
        "utterances": {s: sum(counts[s].values()) for s in split_list} | {"total": len(jobs)},
        "dialogues": {s: len(dialogues[s]) for s in split_list},
        "speakers": {s: len(speakers[s]) for s in split_list},
        "counts": {s: {lab: counts[s][lab] for lab in MELD_LABELS} for s in split_list},
        "duration_s": {s: round(dur_split[s], 2) for s in split_list} | {"total": round(total_dur, 2)},
        "duration_h": round(total_dur / 3600.0, 3),
        "skipped_empty": skipped_empty,
        "families": {f: fam_counts[f] for f in fams},
        "emotion_prosody": {lab: asdict(p) for lab, p in EMOTION_PROSODY.items()},
        "build": {"rendered": rendered, "reused": reused, "workers": n_workers, "render_s": round(elapsed, 2),
                  "utterances_per_s": round(rendered / elapsed, 2) if rendered and elapsed > 0 else None},
        "source": "MELD text annotations (Poria et al., ACL 2019), GPL-3.0; see LICENSE.meld-text",
        "licence": "GPL-3.0 (texts and labels from MELD; the rendered audio derives from them)",
    }
    write_json_atomic(card_path, card)
    log.info("MELD-TTS: wrote %s (%d utterances, %.1f min of synthetic speech; %d rendered in %.1f s)",
             manifest, len(jobs), total_dur / 60.0, rendered, elapsed)
    return manifest
