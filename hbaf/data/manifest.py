"""JSONL manifests: the way users bring their own data.

One JSON object per line::

    {"audio": "wav/a.wav", "text": "I can't believe it", "label": "anger",
     "speaker": "spk1", "dialogue": "d17", "index": 3, "split": "train"}

Required: ``audio`` (relative to the manifest's folder, or absolute), ``text``
(the transcript, not empty) and ``label``. Optional: ``speaker`` (default
"unknown"), ``dialogue`` (default: a unique id per line, i.e. no context),
``index`` (position in the dialogue, default 0) and ``split`` (train / dev /
test; "val", "valid", "validation" mean dev). Either every line has a split or
none has: then a seeded, speaker-independent ~80/10/10 split is made.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from hbaf.data.records import SPLITS, Record
from hbaf.data.splits import auto_split, split_counts
from hbaf.errors import HBAFError
from hbaf.io import write_text_atomic

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("audio", "text", "label")
KNOWN_FIELDS = ("audio", "text", "label", "speaker", "dialogue", "index", "split")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
    "testing": "test",
}


def _short(value: Any, limit: int = 40) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _parse_split(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HBAFError(f"bad split {_short(value)} {where}; use one of train, dev, test")
    s = value.strip().lower()
    if not s:
        return None
    if s not in SPLIT_ALIASES:
        raise HBAFError(f"bad split {_short(value)} {where}; use one of train, dev, test")
    return SPLIT_ALIASES[s]


def _parse_index(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        idx = None
    elif isinstance(value, int):
        idx = value
    elif isinstance(value, float) and value.is_integer():
        idx = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        idx = int(value.strip())
    else:
        idx = None
    if idx is None:
        raise HBAFError(f"non-integer index {_short(value)} {where}; give the utterance's position in its dialogue as a whole number (0, 1, 2, ...)")
    if idx < 0:
        raise HBAFError(f"negative index {idx} {where}; give the utterance's position in its dialogue as 0, 1, 2, ...")
    return idx


def _id_str(value: Any, default: str, name: str, where: str) -> str:
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise HBAFError(f"field '{name}' {where} is a {type(value).__name__}; give a string or number")
    s = str(value).strip()
    return s if s else default


def load_manifest(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    check_audio: bool = True,
) -> list[Record]:
    """Read a JSONL manifest into Records (absolute audio paths), in file order.

    ``labels``: when given, every label must be one of them (e.g. a trained model's
    label list). ``check_audio``: verify that every audio file exists and is not empty.
    ``seed``: used only when no line has a split (the automatic speaker-independent split).
    Raises HBAFError naming the file, the line and the fix on any problem.
    """
    mpath = Path(path).expanduser()
    if not mpath.exists():
        raise HBAFError(f"manifest not found: {mpath}; check the path")
    if mpath.is_dir():
        raise HBAFError(f"manifest path is a folder: {mpath}; give the .jsonl file inside it")
    base = os.path.abspath(mpath.parent)
    known = None
    if labels is not None:
        known = [str(x).strip().lower() for x in labels]
    known_set = set(known) if known is not None else None

    try:
        raw = mpath.read_bytes()
    except OSError as err:
        raise HBAFError(f"cannot read manifest {mpath}: {err.strerror or err}; check permissions") from err
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]

    rows: list[dict[str, Any]] = []
    splits: list[str | None] = []
    lines_no: list[int] = []
    for lineno, bline in enumerate(raw.splitlines(), start=1):
        where = f"on line {lineno} of {mpath}"
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as err:
            raise HBAFError(f"line {lineno} of {mpath} is not valid UTF-8 (byte {err.start}); save the manifest as UTF-8") from err
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise HBAFError(f"invalid JSON on line {lineno} of {mpath} ({err.msg} at column {err.colno}); write one JSON object per line") from err
        if not isinstance(obj, dict):
            raise HBAFError(f"line {lineno} of {mpath} is a JSON {type(obj).__name__}, not an object; write one {{\"audio\": ..., \"text\": ..., \"label\": ...}} object per line")
        for field in REQUIRED_FIELDS:
            if field not in obj or obj[field] is None:
                raise HBAFError(f"missing field '{field}' {where}; every line needs audio, text and label")

        audio = obj["audio"]
        if not isinstance(audio, str) or not audio.strip():
            raise HBAFError(f"field 'audio' {where} must be a non-empty path string; give the audio file relative to the manifest's folder")
        audio_abs = os.path.abspath(os.path.join(base, os.path.expanduser(audio.strip())))
        if check_audio:
            try:
                st = os.stat(audio_abs)
            except OSError:
                raise HBAFError(f"audio file missing {where}: {audio_abs}; fix the path (relative to the manifest's folder) or add the file") from None
            if not os.path.isfile(audio_abs):
                raise HBAFError(f"audio path is not a file {where}: {audio_abs}; point 'audio' at a wav/flac/mp3 file")
            if st.st_size == 0:
                raise HBAFError(f"audio file is empty (0 bytes) {where}: {audio_abs}; re-export the audio or remove the line")

        text = obj["text"]
        if not isinstance(text, str):
            raise HBAFError(f"field 'text' {where} must be a string; give the transcript")
        text = " ".join(text.split())
        if not text:
            raise HBAFError(f"empty text {where}; give the transcript (run ASR on the audio if you have none)")

        label = obj["label"]
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            raise HBAFError(f"field 'label' {where} must be a string; give the emotion name")
        label = str(label).strip().lower()
        if not label:
            raise HBAFError(f"empty label {where}; give the emotion name")
        if known_set is not None and label not in known_set:
            raise HBAFError(f"unknown label '{label}' on line {lineno} of {mpath}; known: {', '.join(known or [])}; retrain or fix the label")

        speaker = _id_str(obj.get("speaker"), "unknown", "speaker", where)
        dialogue = _id_str(obj.get("dialogue"), f"{mpath.stem}:line{lineno}", "dialogue", where)
        index = _parse_index(obj.get("index"), where)
        split = _parse_split(obj.get("split"), where)

        family = obj.get("family")
        rows.append({"audio": audio_abs, "text": text, "label": label, "speaker": speaker, "dialogue": dialogue, "index": index,
                     "family": str(family).strip() if isinstance(family, str) else ""})
        splits.append(split)
        lines_no.append(lineno)

    if not rows:
        raise HBAFError(f"manifest {mpath} is empty (no records); write one JSON object per line with audio, text and label")

    have = [s is not None for s in splits]
    if any(have) and not all(have):
        with_split = lines_no[have.index(True)]
        without = lines_no[have.index(False)]
        raise HBAFError(
            f"manifest {mpath} mixes lines with a split (e.g. line {with_split}) and without (e.g. line {without}); "
            "give 'split' on every line or on none (then a speaker-independent split is made)"
        )
    if not any(have):
        final = auto_split([r["speaker"] for r in rows], [r["dialogue"] for r in rows], seed=seed, source=f"manifest {mpath}")
        log.info("manifest %s has no split field: made a seeded (seed=%d) split %s", mpath, seed, split_counts(final))
    else:
        final = [s for s in splits if s is not None]

    dup = Counter((r["dialogue"], r["index"]) for r in rows)
    n_dup = sum(c - 1 for c in dup.values() if c > 1)
    if n_dup:
        example = next(k for k, c in dup.items() if c > 1)
        log.warning("manifest %s: %d line(s) repeat a (dialogue, index) pair, e.g. %s; dialogue order is ambiguous there", mpath, n_dup, example)

    return [Record(split=s, **r) for r, s in zip(rows, final)]


def label_set(records: Iterable[Record]) -> list[str]:
    """Sorted labels of the train split; error if dev/test hold labels train lacks."""
    records = list(records)
    train = {r.label for r in records if r.split == "train"}
    if not train:
        raise HBAFError("no train records, so there is no label set; give some lines split 'train' (or no split at all)")
    extra: dict[str, set[str]] = {}
    for r in records:
        if r.split != "train" and r.label not in train:
            extra.setdefault(r.label, set()).add(r.split)
    if extra:
        names = ", ".join(f"'{lab}' ({'/'.join(sorted(sp))})" for lab, sp in sorted(extra.items()))
        raise HBAFError(f"labels {names} occur in dev/test but not in train; add training examples of them or drop those lines")
    return sorted(train)


def record_to_json(rec: Record, base: str | os.PathLike) -> dict[str, Any]:
    """A Record as a manifest line, its audio path relative to ``base`` where possible."""
    d = rec.to_dict()
    audio = os.path.abspath(rec.audio)
    try:
        rel = os.path.relpath(audio, os.path.abspath(base))
        d["audio"] = Path(rel).as_posix()
    except ValueError:  # another drive on Windows
        d["audio"] = audio
    return d


def write_manifest(records: Iterable[Record], path: str | os.PathLike) -> Path:
    """Write Records as a JSONL manifest (atomically), audio paths relative to its folder."""
    path = Path(path).expanduser()
    records = list(records)
    for r in records:
        if r.split not in SPLITS:
            raise HBAFError(f"record {r.audio} has split {r.split!r}; splits are train, dev, test")
    base = path.parent if str(path.parent) else Path(".")
    lines = [json.dumps(record_to_json(r, base), ensure_ascii=False) for r in records]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
