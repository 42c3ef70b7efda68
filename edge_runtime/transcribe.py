"""`hbaf-edge transcribe`: the runtime's recogniser over a corpus split, for training on its transcripts.

A model that reads recogniser transcripts at run time learns best from the same kind of text:
this writes, for every clip of a manifest split, what ``WhisperASR`` (the runtime's recogniser,
Whisper tiny.en) hears. One JSON line per clip, ``{"audio": <manifest path>, "asr": <transcript>}``,
appended to OUT; clips already in OUT are skipped, so an interrupted run resumes. The clips are
shared between worker processes, one recogniser thread each.

    hbaf-edge transcribe --split train --beam 5 --workers 2 --out runs/asr-train.jsonl
    hbaf train ... --asr-transcripts runs/asr-train.jsonl --asr-text 1.0
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

from hbaf.data.records import SPLITS
from hbaf.errors import ArgumentParser, HBAFError

HELP = "transcribe a corpus split with the runtime's recogniser (for training on ASR transcripts)"

_ASR: Any = None  # the recogniser of a worker process


def _start_worker(beam: int) -> None:
    global _ASR
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_runtime.asr import WhisperASR

    _ASR = WhisperASR(None, device="cpu", cpu_threads=1, beam_size=beam)


def _transcribe_clip(path: str) -> tuple[str, str]:
    from hbaf.audio import load_audio

    return path, _ASR.transcribe(load_audio(path)).text


def build_parser() -> ArgumentParser:
    from hbaf.data.meld_tts import MANIFEST_NAME, default_corpus_dir

    default = default_corpus_dir() / MANIFEST_NAME
    p = ArgumentParser(prog="hbaf-edge transcribe", description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--manifest", default=str(default), help="the corpus manifest (default: the MELD-TTS corpus, %(default)s)")
    p.add_argument("--split", default="train", choices=SPLITS, help="which split's clips (default %(default)s)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="a seeded fraction of the train split's dialogues, in (0, 1] (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of --fraction's draw and of a manifest without splits (default 0)")
    p.add_argument("--beam", type=int, default=1, help="the recogniser's beam size (default 1; the runtime uses 5)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one recogniser thread each (default 2)")
    p.add_argument("--out", required=True, help="the JSONL file to append the transcripts to")
    return p


def _check(args: Any) -> None:
    if not 0.0 < args.fraction <= 1.0:
        raise HBAFError(f"--fraction {args.fraction}: must be in (0, 1]; e.g. --fraction 0.5 for half the train dialogues")
    if args.fraction < 1.0 and args.split != "train":
        raise HBAFError(f"--fraction applies to the train split only; drop it for --split {args.split}")
    if args.beam < 1:
        raise HBAFError(f"--beam {args.beam}: must be at least 1; use 1 (greedy) or 5 (what the runtime uses)")
    if args.workers < 1:
        raise HBAFError(f"--workers {args.workers}: must be at least 1")
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise HBAFError(f"--out {out} is a folder; give a .jsonl file path")
    if not out.parent.is_dir():
        raise HBAFError(f"--out {out}: folder {out.parent} does not exist; create it first")


def done_clips(out: Path) -> set[str]:
    """The clips ``out`` already holds a transcript of (empty when it does not exist yet)."""
    if not out.exists():
        return set()
    done = set()
    for n, line in enumerate(out.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            done.add(json.loads(line)["audio"])
        except (ValueError, KeyError, TypeError) as err:
            raise HBAFError(f"{out} line {n} is not a transcript line ({{\"audio\": ..., \"asr\": ...}}); "
                            "give another --out, or remove that line") from err
    return done


def clips_of(manifest: str, split: str, fraction: float, seed: int) -> list[str]:
    """The audio paths of ``split`` in ``manifest``; of train, the seeded ``fraction`` of its dialogues."""
    from hbaf.data.manifest import load_manifest
    from hbaf.data.store import subset_train

    records = load_manifest(manifest, seed=seed)
    if split == "train" and fraction < 1.0:
        keep = set(subset_train(records, fraction, seed))
        records = [r for i, r in enumerate(records) if i in keep]
    return [r.audio for r in records if r.split == split]


def transcribe_cli(argv: list[str] | None = None) -> int:
    """``hbaf-edge transcribe`` with the arguments after ``transcribe`` (user errors raise HBAFError)."""
    args = build_parser().parse_args(argv)
    _check(args)
    paths = clips_of(args.manifest, args.split, args.fraction, args.seed)
    if not paths:
        raise HBAFError(f"{args.manifest} has no {args.split} clips; pick another --split")
    out = Path(args.out).expanduser()
    done = done_clips(out)
    todo = [p for p in paths if p not in done]
    print(f"{len(paths)} clips in {args.split}, {len(paths) - len(todo)} already transcribed, {len(todo)} to go", flush=True)
    t0 = time.perf_counter()
    if todo:
        workers = min(args.workers, len(todo))
        with out.open("a", encoding="utf-8") as fh, mp.get_context("spawn").Pool(workers, _start_worker, (args.beam,)) as pool:
            for k, (path, text) in enumerate(pool.imap_unordered(_transcribe_clip, todo, chunksize=8), 1):
                fh.write(json.dumps({"audio": path, "asr": text}) + "\n")
                if k % 500 == 0:
                    fh.flush()
                    print(f"{k}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"done: {len(todo)} clips in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return 0
