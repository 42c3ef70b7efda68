"""Transcribe a corpus split with the runtime's recogniser, for training on ASR transcripts.

Writes one JSON line per utterance, {"audio": <manifest path>, "asr": <transcript>}, to OUT
(appending and skipping clips already there, so an interrupted run resumes). The clips are
shared between worker processes, one recogniser thread each.

    python scripts/transcribe_corpus.py --split train --fraction 0.5 --beam 1 --workers 2 \
        --out ~/.cache/hbaf/corpora/meld-tts/asr-train.jsonl
    hbaf distill ... --asr-transcripts ~/.cache/hbaf/corpora/meld-tts/asr-train.jsonl --asr-text 1.0
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

from hbaf.errors import ArgumentParser, cli_entry

_ASR = None


def _init(beam: int) -> None:
    global _ASR
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_runtime.asr import WhisperASR

    _ASR = WhisperASR(None, device="cpu", cpu_threads=1, beam_size=beam)


def _job(path: str) -> tuple[str, str]:
    from hbaf.features import load_audio

    return path, _ASR.transcribe(load_audio(path)).text


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from hbaf.data.manifest import load_manifest
    from hbaf.data.meld_tts import default_corpus_dir
    from hbaf.data.store import subset_train

    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(default_corpus_dir() / "manifest.jsonl"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--fraction", type=float, default=1.0, help="seeded fraction of the split's dialogues (train only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    records = load_manifest(args.manifest, seed=args.seed)
    if args.split == "train" and args.fraction < 1.0:
        keep = set(subset_train(records, args.fraction, args.seed))
        records = [r for i, r in enumerate(records) if i in keep]
    paths = [r.audio for r in records if r.split == args.split]
    out = Path(args.out).expanduser()
    done = set()
    if out.exists():
        done = {json.loads(line)["audio"] for line in out.read_text().splitlines() if line.strip()}
    todo = [p for p in paths if p not in done]
    print(f"{len(paths)} clips in {args.split}, {len(done)} already transcribed, {len(todo)} to go", flush=True)
    t0 = time.perf_counter()
    with out.open("a", encoding="utf-8") as fh, mp.get_context("spawn").Pool(args.workers, _init, (args.beam,)) as pool:
        for k, (path, text) in enumerate(pool.imap_unordered(_job, todo, chunksize=8), 1):
            fh.write(json.dumps({"audio": path, "asr": text}) + "\n")
            if k % 500 == 0:
                fh.flush()
                print(f"{k}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"done: {len(todo)} clips in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
