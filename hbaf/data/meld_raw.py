"""MELD.Raw loader: the official release's mp4 clips + *_sent_emo.csv -> Records.

Layout (the official MELD.Raw, after unpacking train/dev/test archives)::

    root/train_splits/dia{D}_utt{U}.mp4
    root/dev_splits_complete/dia{D}_utt{U}.mp4
    root/output_repeated_splits_test/dia{D}_utt{U}.mp4
    root/train_sent_emo.csv, root/dev_sent_emo.csv, root/test_sent_emo.csv

Also found: each clip folder one level down (``root/train/train_splits``,
``root/dev/dev_splits_complete``, ``root/test/output_repeated_splits_test``) and
the CSVs in ``root/..`` or the split's subfolder. Each clip's audio is decoded once with
ffmpeg to 16 kHz mono 16-bit WAV in a cache and reused afterwards. Clips that are
missing or have no decodable audio (MELD has a few) are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from hbaf.contract import SAMPLE_RATE
from hbaf.data.records import MELD_LABELS, SPLITS, Record
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

CLIP_DIRS = {
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits"),
}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
FAILED_FILE = "failed.json"

# Characters that appear when UTF-8 bytes were decoded as Windows-1252 or Latin-1.
_CP1252_SPECIALS = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE_RUN = re.compile("[\u0080-\u00ff" + _CP1252_SPECIALS + "]{2,}")
_PUNCT = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2012": "-", "\u2212": "-",
        "\u2026": "...", "\u00a0": " ", "\u200b": "", "\ufeff": "",
    }
)


def _char_byte(ch: str) -> int | None:
    o = ord(ch)
    if o < 256:
        return o
    try:
        return ch.encode("cp1252")[0]
    except UnicodeEncodeError:
        return None


def _unmojibake(run: str) -> str:
    bs = [_char_byte(c) for c in run]
    if any(b is None for b in bs):
        return run
    try:
        return bytes(bs).decode("utf-8")  # type: ignore[arg-type]
    except UnicodeDecodeError:
        return run


def _c1_to_cp1252(ch: str) -> str:
    try:
        return bytes([ord(ch)]).decode("cp1252")
    except UnicodeDecodeError:
        return ""


def normalize_text(text: str) -> str:
    """Repair mojibake (``â€™``, ``\\x92``) and map curly quotes, dashes and ellipses to ASCII."""
    text = _MOJIBAKE_RUN.sub(lambda m: _unmojibake(m.group(0)), text)
    text = re.sub("[\u0080-\u009f]", lambda m: _c1_to_cp1252(m.group(0)), text)
    text = text.translate(_PUNCT)
    return " ".join(text.split())


@dataclass(frozen=True)
class _Row:
    split: str
    dia: int
    utt: int
    text: str
    speaker: str
    label: str


def _read_csv(path: Path, split: str) -> list[_Row]:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("cp1252", errors="replace")
    reader = csv.DictReader(io.StringIO(content, newline=""))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise HBAFError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(cols) or 'nothing'}); use the official MELD *_sent_emo.csv")
    reader.fieldnames = cols
    rows: list[_Row] = []
    for rec in reader:
        line = reader.line_num
        label = (rec.get("Emotion") or "").strip().lower()
        if label not in MELD_LABELS:
            raise HBAFError(f"unknown emotion {label!r} on line {line} of {path}; MELD labels are {', '.join(MELD_LABELS)}; fix the csv")
        try:
            dia = int(str(rec.get("Dialogue_ID")).strip())
            utt = int(str(rec.get("Utterance_ID")).strip())
        except ValueError:
            raise HBAFError(f"non-integer Dialogue_ID/Utterance_ID on line {line} of {path}; use the official MELD csv") from None
        rows.append(
            _Row(
                split=split,
                dia=dia,
                utt=utt,
                text=normalize_text(rec.get("Utterance") or ""),
                speaker=" ".join((rec.get("Speaker") or "").split()) or "unknown",
                label=label,
            )
        )
    return rows


def _find_layout(root: Path, splits: Sequence[str]) -> tuple[dict[str, Path], dict[str, Path]]:
    csvs: dict[str, Path] = {}
    clips: dict[str, Path] = {}
    problems: list[str] = []
    for split in splits:
        name = f"{split}_sent_emo.csv"
        cands = [root / name, root.parent / name, root / split / name]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            problems.append(f"{name} (in {root} or {root.parent})")
        else:
            csvs[split] = found
        dcands = [root / d for d in CLIP_DIRS[split]] + [root / split / d for d in CLIP_DIRS[split]]
        dfound = next((c for c in dcands if c.is_dir()), None)
        if dfound is None:
            problems.append(f"{CLIP_DIRS[split][0]}/ (in {root} or {root / split})")
        else:
            clips[split] = dfound
    if problems:
        raise HBAFError(
            f"not a MELD.Raw folder: {root} lacks {'; '.join(problems)}; unpack MELD.Raw.tar.gz and its "
            "train/dev/test archives there (expected dia{D}_utt{U}.mp4 clips and the *_sent_emo.csv files)"
        )
    return csvs, clips


def _default_cache(root: Path) -> Path:
    cand = root / ".hbaf_cache" / "wav16k"
    try:
        cand.mkdir(parents=True, exist_ok=True)
        probe = cand / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
        return cand
    except OSError:
        import hashlib

        tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hbaf" / "meld_raw" / tag


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _decode(src: Path, dst: Path) -> str | None:
    """mp4 -> 16 kHz mono s16 wav at ``dst`` (atomically). Returns None on success, else the reason."""
    try:
        with atomic_path(dst) as tmp:
            cmd = [
                "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(src),
                "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                "-c:a", "pcm_s16le", "-f", "wav", str(tmp),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, check=False)
            if proc.returncode != 0:
                lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise _DecodeFailed(lines[-1] if lines else f"ffmpeg exit code {proc.returncode}")
            if tmp.stat().st_size <= 44:  # header only: no audio samples
                raise _DecodeFailed("no audio samples")
    except _DecodeFailed as err:
        return str(err)
    return None


class _DecodeFailed(Exception):
    pass


def _check_ffmpeg() -> None:
    try:
        subprocess.run(["ffmpeg", "-version"], capture_output=True, check=False)
    except FileNotFoundError:
        raise HBAFError("ffmpeg is not installed, and it is needed to decode the MELD mp4 clips; apt-get install ffmpeg") from None


def load_meld_raw(
    root: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    splits: Sequence[str] = SPLITS,
) -> list[Record]:
    """Load MELD.Raw into Records whose audio is a cached 16 kHz mono WAV.

    ``cache_dir``: where the decoded WAVs go (default ``root/.hbaf_cache/wav16k``, or
    ``~/.cache/hbaf/meld_raw/<id>`` when root is read-only); already decoded clips and
    clips known to fail (same size and mtime) are not decoded again.
    ``workers``: parallel ffmpeg processes (default: CPU count, at most 8).
    Records come in csv order: split, then dialogue, then utterance; dialogue ids are
    ``"{split}-{D}"`` and ``index`` is the utterance id U.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HBAFError(f"MELD.Raw folder not found: {root}; give the folder holding train_splits/ and the *_sent_emo.csv files")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise HBAFError(f"unknown MELD split(s) {bad or splits}; choose from {', '.join(SPLITS)}")
    csvs, clips = _find_layout(root, splits)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache(root)
    cache.mkdir(parents=True, exist_ok=True)

    rows: list[_Row] = []
    for split in splits:
        rows.extend(_read_csv(csvs[split], split))
    if not rows:
        raise HBAFError(f"the MELD csv files under {root} hold no utterances; use the official *_sent_emo.csv")

    failed_path = cache / FAILED_FILE
    try:
        failed: dict[str, dict] = json.loads(failed_path.read_text(encoding="utf-8")) if failed_path.exists() else {}
    except (OSError, ValueError):
        failed = {}

    missing: list[str] = []
    known_bad: list[str] = []
    todo: list[tuple[int, Path, Path, str]] = []
    ready: dict[int, Path] = {}
    for i, row in enumerate(rows):
        name = f"dia{row.dia}_utt{row.utt}"
        src = clips[row.split] / f"{name}.mp4"
        dst = cache / row.split / f"{name}.wav"
        key = f"{row.split}/{name}"
        if not src.is_file():
            missing.append(key)
            continue
        stamp = _stamp(src)
        if dst.is_file():
            dst_st = dst.stat()
            if dst_st.st_size > 44 and dst_st.st_mtime_ns >= stamp[1]:
                ready[i] = dst
                continue
        if key in failed and failed[key].get("stamp") == stamp:
            known_bad.append(key)
            continue
        todo.append((i, src, dst, key))

    new_failed: dict[str, str] = {}
    if todo:
        _check_ffmpeg()
        n_workers = max(1, int(workers)) if workers is not None else min(8, os.cpu_count() or 1)
        log.info("decoding %d MELD clips to 16 kHz wav in %s with %d worker(s)", len(todo), cache, n_workers)

        def work(item: tuple[int, Path, Path, str]) -> str | None:
            return _decode(item[1], item[2])

        with ThreadPoolExecutor(max_workers=n_workers) as pool, tqdm(total=len(todo), desc="MELD wav", unit="clip") as bar:
            for (i, src, dst, key), why in zip(todo, pool.map(work, todo)):
                if why is None:
                    ready[i] = dst
                    failed.pop(key, None)
                else:
                    new_failed[key] = why
                    failed[key] = {"stamp": _stamp(src), "reason": why}
                bar.update(1)
        write_json_atomic(failed_path, failed)
    log.info("MELD: %d clips decoded now, %d taken from the cache %s", len(todo) - len(new_failed), len(ready) - (len(todo) - len(new_failed)), cache)

    if missing:
        log.warning("MELD: %d of %d clips missing, skipped (e.g. %s)", len(missing), len(rows), ", ".join(missing[:3]))
    n_bad = len(known_bad) + len(new_failed)
    if n_bad:
        ex = (list(new_failed) + known_bad)[:3]
        log.warning("MELD: %d of %d clips have no decodable audio, skipped (e.g. %s)", n_bad, len(rows), ", ".join(ex))
    if not ready:
        where = ", ".join(str(clips[s]) for s in splits)
        raise HBAFError(
            f"none of the {len(rows)} MELD utterances has a usable clip ({len(missing)} missing, {n_bad} undecodable) in {where}; "
            "check that the archives are fully unpacked (files named dia{D}_utt{U}.mp4)"
        )

    out: list[Record] = []
    for i, row in enumerate(rows):
        if i not in ready:
            continue
        out.append(
            Record(
                audio=os.path.abspath(ready[i]),
                text=row.text,
                label=row.label,
                speaker=row.speaker,
                dialogue=f"{row.split}-{row.dia}",
                index=row.utt,
                split=row.split,
            )
        )
    return out
