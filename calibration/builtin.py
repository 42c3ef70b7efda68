"""Built-in utterances: what calibration, evaluation and the benchmark run on when no corpus is given.

A small MELD-TTS subset (``hbaf.data.meld_tts.build_corpus``: MELD's dialogue texts, speakers
and labels rendered on this machine with every installed synthesizer family — synthetic speech,
no recordings ship)
is built once into ``$HBAF_HOME/builtin/meld-tts`` (``~/.cache/hbaf/builtin/meld-tts``) and
reused: ``BUILTIN_TRAIN`` utterances of whole train dialogues (calibration) and the first
``BUILTIN_TEST`` utterances of whole test dialogues (evaluation). A model whose labels are not
MELD's seven gets a manifest of the utterances whose labels it has.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hbaf.errors import HBAFError
from hbaf.io import hbaf_home, write_text_atomic

log = logging.getLogger(__name__)

BUILTIN_TRAIN = 320  # calibration utterances (whole train dialogues)
BUILTIN_TEST = 160  # evaluation utterances (whole test dialogues)
BUILTIN_SEED = 0
CALIBRATION_SPLIT, EVAL_SPLIT = "train", "test"


def builtin_dir() -> Path:
    return hbaf_home() / "builtin" / "meld-tts"


def _cut_whole_dialogues(rows: list[dict], limit: int) -> list[dict]:
    """The first dialogues of ``rows`` (file order) that fit in ``limit`` utterances together."""
    order: list[str] = []
    by_dia: dict[str, list[dict]] = {}
    for r in rows:
        if r["dialogue"] not in by_dia:
            order.append(r["dialogue"])
            by_dia[r["dialogue"]] = []
        by_dia[r["dialogue"]].append(r)
    out: list[dict] = []
    for dia in order:
        if len(out) + len(by_dia[dia]) <= limit:
            out += by_dia[dia]
    return out


def builtin_manifest(labels: Sequence[str], *, train: int | None = None, test: int | None = None,
                     workers: int | None = None) -> Path:
    """The manifest of the built-in utterances for a model with ``labels`` (rendered on first use);
    ``train``/``test`` default to ``BUILTIN_TRAIN``/``BUILTIN_TEST``."""
    from hbaf.data.meld_tts import build_corpus

    train = BUILTIN_TRAIN if train is None else train
    test = BUILTIN_TEST if test is None else test
    folder = builtin_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HBAFError(f"cannot create {folder} for the built-in utterances ({err.strerror or err}); "
                        "set HBAF_HOME to a writable folder or pass --manifest M") from err
    corpus = build_corpus(folder, limit=max(train, test), splits=(CALIBRATION_SPLIT, EVAL_SPLIT), seed=BUILTIN_SEED,
                          workers=workers)
    known = {str(x).strip().lower() for x in labels}
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if str(r["label"]).strip().lower() in known]
    chosen = {split: _cut_whole_dialogues([r for r in rows if r["split"] == split], limit)
              for split, limit in ((CALIBRATION_SPLIT, train), (EVAL_SPLIT, test))}
    if not chosen[CALIBRATION_SPLIT] or not chosen[EVAL_SPLIT]:
        raise HBAFError(f"the model's labels {sorted(known)} share none with the built-in MELD utterances' emotions; "
                        "pass --manifest M with utterances of the model's labels")
    key = hashlib.sha256(json.dumps([sorted(known), train, test]).encode()).hexdigest()[:10]
    manifest = folder / f"builtin-{key}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for split in (CALIBRATION_SPLIT, EVAL_SPLIT) for r in chosen[split])
    if not manifest.is_file() or manifest.read_text(encoding="utf-8") != text:
        write_text_atomic(manifest, text)
    log.info("built-in utterances: %d calibration + %d evaluation (MELD-TTS, synthetic speech) in %s",
             len(chosen[CALIBRATION_SPLIT]), len(chosen[EVAL_SPLIT]), manifest)
    return manifest


def describe(manifest: Path) -> str:
    """One line: how many utterances of each split the built-in manifest holds, and where."""
    counts: dict[str, int] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            split = json.loads(line)["split"]
            counts[split] = counts.get(split, 0) + 1
    parts = ", ".join(f"{n} {split}" for split, n in counts.items())
    return f"built-in utterances ({parts}; MELD-TTS: MELD dialogues rendered by the installed synthesizers, synthetic speech) in {manifest}"
