"""MELD's dialogues as text: the vendored ``*_sent_emo.csv`` files read into utterance dicts.

The dialogue texts, speakers and emotion labels of MELD (Poria et al., ACL 2019) are vendored in
``hbaf/data/meld_csv`` (GPL-3.0). ``read_meld_csv`` reads one split and cleans its text
(``normalize_text``) so that a synthesizer reads it well; ``is_speakable`` tells which utterances
have anything to say. hbaf.data.meld_tts renders them to speech.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

from hbaf.data.records import MELD_LABELS, SPLITS
from hbaf.errors import HBAFError

MELD_CSV_DIR = Path(__file__).resolve().parent / "meld_csv"


def meld_csv_path(split: str) -> Path:
    """Path of the vendored MELD CSV of ``split`` ("train", "dev" or "test")."""
    if split not in SPLITS:
        raise HBAFError(f"unknown MELD split {split!r}; use one of {', '.join(SPLITS)}")
    return MELD_CSV_DIR / f"{split}_sent_emo.csv"


_PUNCT_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2013": "-", "\u2012": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u2014": " - ", "\u2015": " - ",
    "\u2026": "...",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
    # Windows-1252 bytes that ended up as C1 control characters.
    "\x91": "'", "\x92": "'", "\x93": '"', "\x94": '"', "\x85": "...", "\x96": "-", "\x97": " - ",
}
_PUNCT_TABLE = str.maketrans(_PUNCT_MAP)
# UTF-8 punctuation that was decoded as Windows-1252 ("â€™" and friends).
_MOJIBAKE = {
    "\u00e2\u20ac\u2122": "'", "\u00e2\u20ac\u02dc": "'", "\u00e2\u20ac\u0153": '"',
    "\u00e2\u20ac\u009d": '"', "\u00e2\u20ac\u201c": "-", "\u00e2\u20ac\u201d": " - ",
    "\u00e2\u20ac\u00a6": "...", "\u00c2\u00a0": " ",
}
_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)


def normalize_text(text: str) -> str:
    """MELD utterance text -> plain text espeak-ng reads well.

    Curly quotes, dashes, ellipses, Windows-1252 leftovers ('\\x92', '\\x85', '\\x96', ...)
    and their UTF-8-read-as-cp1252 mojibake become ASCII; whitespace is collapsed.
    Accented letters are kept.
    """
    if "\u00e2\u20ac" in text or "\u00c3" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            for bad, good in _MOJIBAKE.items():
                text = text.replace(bad, good)
    text = text.translate(_PUNCT_TABLE)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def is_speakable(text: str) -> bool:
    """True when the text holds at least one letter or digit (espeak-ng has something to say)."""
    return bool(_SPEAKABLE.search(text))


def _decode_csv_bytes(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_meld_csv(split: str, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read a MELD ``*_sent_emo.csv`` (the vendored copy of ``split`` unless ``path`` is given).

    Returns one dict per utterance, sorted by (dialogue_id, utterance_id), with keys
    split, dialogue_id (int), utterance_id (int), speaker, text (normalised), label
    (lower case, one of MELD_LABELS), sentiment, season, episode, start_time, end_time.
    """
    if split not in SPLITS:
        raise HBAFError(f"unknown MELD split {split!r}; use one of {', '.join(SPLITS)}")
    csv_path = Path(path) if path is not None else meld_csv_path(split)
    if not csv_path.is_file():
        raise HBAFError(f"MELD CSV not found: {csv_path}; reinstall hbaf-edge or pass the path of {split}_sent_emo.csv")
    reader = csv.DictReader(io.StringIO(_decode_csv_bytes(csv_path.read_bytes()), newline=""))
    fields = {name.strip(): name for name in (reader.fieldnames or [])}
    needed = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
    missing = [c for c in needed if c not in fields]
    if missing:
        raise HBAFError(f"{csv_path} is not a MELD CSV (missing columns {', '.join(missing)}); use the official *_sent_emo.csv")

    def col(row: dict[str, str], name: str) -> str:
        key = fields.get(name)
        return (row.get(key) or "") if key is not None else ""

    out: list[dict[str, Any]] = []
    for line_no, row in enumerate(reader, start=2):
        label = col(row, "Emotion").strip().lower()
        if label not in MELD_LABELS:
            raise HBAFError(f"{csv_path} line {line_no}: unknown emotion {label!r}; expected one of {', '.join(MELD_LABELS)}")
        try:
            dia = int(col(row, "Dialogue_ID").strip())
            utt = int(col(row, "Utterance_ID").strip())
        except ValueError as err:
            raise HBAFError(f"{csv_path} line {line_no}: Dialogue_ID/Utterance_ID are not integers; fix or re-download the CSV") from err
        out.append(
            {
                "split": split,
                "dialogue_id": dia,
                "utterance_id": utt,
                "speaker": normalize_text(col(row, "Speaker")),
                "text": normalize_text(col(row, "Utterance")),
                "label": label,
                "sentiment": col(row, "Sentiment").strip().lower(),
                "season": col(row, "Season").strip(),
                "episode": col(row, "Episode").strip(),
                "start_time": col(row, "StartTime").strip(),
                "end_time": col(row, "EndTime").strip(),
            }
        )
    out.sort(key=lambda r: (r["dialogue_id"], r["utterance_id"]))
    return out
