"""IEMOCAP loader (IEMOCAP_full_release layout) -> Records, the usual 6-class setup.

Layout::

    root/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
        [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
    root/Session{1..5}/dialog/transcriptions/<dialog>.txt
        Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    root/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav

Kept: utterances whose consensus label is one of ``classes``. Speaker is the
session plus the gender letter of the utterance ("Ses01_F"); ``index`` is the
utterance's rank by start time among all evaluated utterances of its dialog (so
the positions of dropped classes leave gaps and the order stays true). Session 5
is test; of Sessions 1-4 a seeded ~10% of whole dialogs is dev, the rest train.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hbaf.data.records import Record
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

IEMOCAP_CLASSES = ("hap", "sad", "neu", "ang", "exc", "fru")
ALL_IEMOCAP_LABELS = ("neu", "fru", "sad", "sur", "ang", "hap", "exc", "fea", "dis", "oth", "xxx")
TEST_SESSION = 5
DEV_FRACTION = 0.1

_EVAL_LINE = re.compile(r"^\[\s*([0-9.]+)\s*-\s*([0-9.]+)\s*\]\s+(\S+)\s+(\S+)")
_TRANS_LINE = re.compile(r"^(\S+)\s+\[\s*[0-9.]+\s*-\s*[0-9.]+\s*\]\s*:\s?(.*)$")
_UTT_ID = re.compile(r"^(Ses\d\d)[FM]_.+_([FM])[A-Za-z]*\d+$")


@dataclass
class _Utt:
    session: int
    dialog: str
    utt: str
    start: float
    label: str


def _txt_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.splitlines()


def _speaker(utt: str) -> str:
    m = _UTT_ID.match(utt)
    if m:
        return f"{m.group(1)}_{m.group(2)}"
    # Unusual ids: session prefix plus the first letter of the last part.
    tail = utt.rsplit("_", 1)[-1]
    return f"{utt[:5]}_{tail[:1] or 'X'}"


def load_iemocap(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] = IEMOCAP_CLASSES,
    seed: int = 0,
    dev_fraction: float = DEV_FRACTION,
) -> list[Record]:
    """Load IEMOCAP_full_release as Records (labels as in ``classes``: hap, sad, neu, ang, exc, fru).

    Records come ordered by session, dialog and start time. ``seed`` picks the dev dialogs.
    """
    root = Path(root).expanduser()
    expected = "Session{1..5}/dialog/EmoEvaluation/*.txt, Session{n}/dialog/transcriptions/*.txt and Session{n}/sentences/wav/<dialog>/<utt>.wav"
    if not root.is_dir():
        raise HBAFError(f"IEMOCAP folder not found: {root}; give the IEMOCAP_full_release folder (with {expected})")
    classes = tuple(str(c).strip().lower() for c in classes)
    if not classes:
        raise HBAFError("no IEMOCAP classes given; use e.g. hap, sad, neu, ang, exc, fru")
    unknown = [c for c in classes if c not in ALL_IEMOCAP_LABELS]
    if unknown:
        raise HBAFError(f"unknown IEMOCAP class(es) {', '.join(unknown)}; choose from {', '.join(ALL_IEMOCAP_LABELS)}")
    if not 0.0 <= dev_fraction < 1.0:
        raise HBAFError(f"dev_fraction {dev_fraction} out of range; use a value in [0, 1)")

    sessions = [n for n in range(1, 6) if (root / f"Session{n}" / "dialog" / "EmoEvaluation").is_dir()]
    if not sessions:
        raise HBAFError(f"not an IEMOCAP_full_release folder: {root} has no Session1..Session5 with dialog/EmoEvaluation; expected {expected}")
    if len(sessions) < 5:
        absent = [f"Session{n}" for n in range(1, 6) if n not in sessions]
        log.warning("IEMOCAP: %s missing under %s%s", ", ".join(absent), root, "; the test split (Session5) will be empty" if TEST_SESSION not in sessions else "")

    utts: list[_Utt] = []
    rank: dict[str, int] = {}
    for n in sessions:
        eval_dir = root / f"Session{n}" / "dialog" / "EmoEvaluation"
        files = _txt_files(eval_dir)
        if not files:
            raise HBAFError(f"no evaluation files in {eval_dir}; expected {expected}")
        for f in files:
            dialog = f.stem
            found: list[_Utt] = []
            for line in _read_lines(f):
                m = _EVAL_LINE.match(line.strip())
                if not m:
                    continue
                found.append(_Utt(session=n, dialog=dialog, utt=m.group(3), start=float(m.group(1)), label=m.group(4).lower()))
            found.sort(key=lambda u: (u.start, u.utt))
            for pos, u in enumerate(found):
                rank[u.utt] = pos
            utts.extend(u for u in found if u.label in classes)

    texts: dict[str, str] = {}
    for n in sessions:
        tdir = root / f"Session{n}" / "dialog" / "transcriptions"
        if not tdir.is_dir():
            raise HBAFError(f"IEMOCAP transcriptions folder missing: {tdir}; expected {expected}")
        for f in _txt_files(tdir):
            for line in _read_lines(f):
                m = _TRANS_LINE.match(line.strip())
                if m:
                    texts[m.group(1)] = " ".join(m.group(2).split())

    records_src: list[tuple[_Utt, str, str]] = []
    no_wav: list[str] = []
    no_text: list[str] = []
    for u in utts:
        wav = root / f"Session{u.session}" / "sentences" / "wav" / u.dialog / f"{u.utt}.wav"
        if not wav.is_file() or wav.stat().st_size == 0:
            no_wav.append(u.utt)
            continue
        text = texts.get(u.utt, "")
        if not text:
            no_text.append(u.utt)
            continue
        records_src.append((u, os.path.abspath(wav), text))
    if no_wav:
        log.warning("IEMOCAP: %d of %d utterances have no wav file, skipped (e.g. %s)", len(no_wav), len(utts), ", ".join(no_wav[:3]))
    if no_text:
        log.warning("IEMOCAP: %d of %d utterances have no transcript, skipped (e.g. %s)", len(no_text), len(utts), ", ".join(no_text[:3]))
    if not records_src:
        if not utts:
            raise HBAFError(f"no IEMOCAP utterances labelled {', '.join(classes)} under {root}; check the EmoEvaluation files (expected {expected})")
        raise HBAFError(f"none of the {len(utts)} IEMOCAP utterances has both a wav file and a transcript under {root}; expected {expected}")

    # Dev holdout: whole dialogs of Sessions 1-4, seeded, about dev_fraction of their utterances.
    sizes: dict[str, int] = {}
    for u, _, _ in records_src:
        if u.session != TEST_SESSION:
            sizes[u.dialog] = sizes.get(u.dialog, 0) + 1
    dialogs = sorted(sizes)
    random.Random(seed).shuffle(dialogs)
    target = dev_fraction * sum(sizes.values())
    dev: set[str] = set()
    held = 0
    if dev_fraction > 0 and len(dialogs) > 1:
        for d in dialogs:
            if held >= target:
                break
            # Skip a dialog that would overshoot by more than it helps (keeps dev near the target).
            if dev and held + sizes[d] - target > target - held:
                continue
            dev.add(d)
            held += sizes[d]

    out: list[Record] = []
    for u, wav, text in records_src:
        split = "test" if u.session == TEST_SESSION else ("dev" if u.dialog in dev else "train")
        out.append(
            Record(
                audio=wav,
                text=text,
                label=u.label,
                speaker=_speaker(u.utt),
                dialogue=u.dialog,
                index=rank[u.utt],
                split=split,
            )
        )
    return out
