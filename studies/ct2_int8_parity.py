"""Our PyTorch Whisper in CTranslate2's CPU int8 arithmetic (hbaf/ct2_int8.py) against today's
recogniser (CTranslate2 int8): encoder states and transcripts, word for word.

The clips are the recogniser benchmark's (bench/recogniser.py): the demo's 12 turns, or with
``--clips meld`` those and the 73 turns of a 60 s and a 300 s MELD conversation. **All of it is
synthetic speech** (espeak-ng; MELD's texts in MELD-TTS voices). Two tables:

- **Encoder states**, each clip's own frames of the 10 s window, against CTranslate2 int8's:
  max |d| and cosine (lowest and mean over the clips), for our float32 encoder and our int8 one,
  and the encoder's p50 time per window (ratios from this one run).
- **Recognition** at each ``--beams`` size, ``WhisperASR`` end to end: WER against the script
  and transcripts word for word as today's (on all the clips and on the demo's turns), for today's recogniser, our float32 and int8 forms,
  and the two mixed pairs (CTranslate2's encoder with our int8 decoder, ours with its decoder),
  which say which half a remaining difference comes from. The clips that differ are listed.

    python -m studies.ct2_int8_parity [--clips demo|meld] [--beams 1,5] [--out runs/ct2_int8/parity.md]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hbaf.errors import ArgumentParser, HBAFError, cli_entry

TODAY = "ctranslate2 int8 (today)"
# form -> (encoder, decoder): "ct2" is CTranslate2 int8, "fp32" our float32 model, "int8" ours in CTranslate2's int8
LABELS = {"fp32": "pytorch fp32", "int8": "pytorch ct2-int8"}
FORMS = {TODAY: ("ct2", "ct2"), "pytorch fp32": ("fp32", "fp32"), "pytorch ct2-int8": ("int8", "int8"),
         "ct2 encoder + pytorch ct2-int8 decoder": ("ct2", "int8"), "pytorch ct2-int8 encoder + ct2 decoder": ("int8", "ct2")}


def torch_models(threads: int) -> dict[str, Any]:
    import torch

    from hbaf.whisper import load_whisper_torch

    torch.set_num_threads(threads)
    return {"fp32": load_whisper_torch(), "int8": load_whisper_torch(int8="ct2")}


def halves(kind_enc: str, kind_dec: str, asr: Any, models: dict[str, Any], threads: int) -> tuple[Any, Any]:
    """The encoder and decoder objects of one form, over the ``WhisperASR``'s CTranslate2 model."""
    from edge_runtime.recogniser import CT2Decoder, CT2Encoder, GraphDecoder, TorchEncoder
    from edge_runtime.whisper_decode import TorchDecoderStep

    if kind_enc == "ct2":
        enc = CT2Encoder(asr.model)
    else:
        enc = TorchEncoder(device="cpu", threads=threads)
        enc.whisper, enc.name = models[kind_enc], f"torch-cpu-{kind_enc}"
    dec = CT2Decoder(asr.model) if kind_dec == "ct2" else GraphDecoder(TorchDecoderStep(models[kind_dec]), f"torch-cpu-{kind_dec}")
    return enc, dec


def encoder_table(utts: list, models: dict[str, Any], threads: int) -> dict[str, dict]:
    """Per encoder form: parity of each clip's own frames with CTranslate2 int8's, and time per window."""
    import torch

    from bench.recogniser import _frames_parity
    from hbaf.encoder import WINDOW_S, load_whisper, utterance_states, window_mel

    ct2 = load_whisper(cpu_threads=threads)
    mels = [window_mel(u.samples, WINDOW_S, ct2.feature_extractor) for u in utts]
    encode = {"ctranslate2 int8": lambda m: np.asarray(ct2.encode(m))}
    for kind, model in models.items():
        encode[LABELS[kind]] = lambda m, model=model: model.encoder(torch.from_numpy(m)[None])[0].numpy()
    states: dict[str, list[np.ndarray]] = {}
    rows: dict[str, dict] = {}
    with torch.inference_mode():
        for name, fn in encode.items():
            fn(mels[0])  # warm-up
            outs, ms = [], []
            for mel, u in zip(mels, utts):
                t0 = time.perf_counter()
                out = fn(mel)
                ms.append(1000 * (time.perf_counter() - t0))
                outs.append(utterance_states(out, u.samples.size))
            states[name], rows[name] = outs, {"p50_ms": float(np.median(ms))}
    ref = states["ctranslate2 int8"]
    for name, outs in states.items():
        if name != "ctranslate2 int8":
            pairs = [_frames_parity(a, b) for a, b in zip(outs, ref)]
            rows[name].update(max_abs=max(p[0] for p in pairs), cos_min=min(p[1] for p in pairs),
                              cos_mean=float(np.mean([p[1] for p in pairs])))
    return rows


def recognition_table(utts: list, models: dict[str, Any], beam: int, threads: int, n_demo: int) -> dict[str, dict]:
    """Per form at ``beam``: WER, transcripts identical to today's, the clips that differ; the
    same on the first ``n_demo`` clips (the demo's turns)."""
    from edge_runtime.asr import WhisperASR
    from hbaf.wer import corpus_wer

    texts: dict[str, list[str]] = {}
    rows: dict[str, dict] = {}
    for name, (kind_enc, kind_dec) in FORMS.items():
        asr = WhisperASR(device="cpu", cpu_threads=threads, beam_size=beam)
        asr.audio_encoder, asr.text_decoder = halves(kind_enc, kind_dec, asr, models, threads)
        t0 = time.perf_counter()
        texts[name] = [asr.transcribe(u.samples).text for u in utts]
        rows[name] = {"wer": corpus_wer([(u.text, h) for u, h in zip(utts, texts[name])]),
                      "seconds": time.perf_counter() - t0}
        print(f"beam {beam}  {name:42s} WER {100 * rows[name]['wer']:.1f} %", flush=True)
    for name, row in rows.items():
        differ = [i for i, (a, b) in enumerate(zip(texts[name], texts[TODAY])) if a != b]
        row.update(identical=len(utts) - len(differ), differ=differ,
                   demo_wer=corpus_wer([(u.text, h) for u, h in zip(utts[:n_demo], texts[name])]),
                   demo_identical=n_demo - sum(i < n_demo for i in differ),
                   examples=[(i, texts[TODAY][i], texts[name][i]) for i in differ[:3]])
    return rows


def markdown(report: dict) -> str:
    n, d = report["clips"], report["demo_clips"]
    lines = [f"# PyTorch Whisper in CTranslate2's int8 arithmetic vs today's recogniser ({report['date']})", "",
             f"{n} turn clips ({report['speech']}); {report['threads']} threads; {report['machine']}.", "",
             "## Encoder states (each clip's own frames) vs CTranslate2 int8", "",
             "| encoder | max abs diff | cosine lowest | cosine mean | p50 ms / 10 s window |", "|---|---|---|---|---|"]
    for name, r in report["encoder"].items():
        if "max_abs" in r:
            lines.append(f"| {name} | {r['max_abs']:.3g} | {r['cos_min']:.6f} | {r['cos_mean']:.6f} | {r['p50_ms']:.0f} |")
        else:
            lines.append(f"| {name} (reference) | 0 | 1 | 1 | {r['p50_ms']:.0f} |")
    for beam, rows in report["recognition"].items():
        lines += ["", f"## Recognition, beam {beam}", "",
                  f"| encoder + decoder | WER | transcripts as today's | demo's {d} turns: WER | as today's | clips that differ |",
                  "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {100 * r['wer']:.1f} % | {r['identical']}/{n} | {100 * r['demo_wer']:.1f} % | "
                         f"{r['demo_identical']}/{d} | {', '.join(map(str, r['differ'])) or '-'} |")
        ours = rows["pytorch ct2-int8"]
        for i, today, got in ours["examples"]:
            lines.append(f"\n- clip {i}: today {today!r}; int8 form {got!r}")
    return "\n".join(lines) + "\n"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m studies.ct2_int8_parity", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", choices=("demo", "meld"), default="meld",
                   help="the demo's 12 turns, or those and 73 MELD turns (default %(default)s)")
    p.add_argument("--beams", default="5,1", help="beam sizes, comma-separated (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/ct2_int8/parity.md", help="the markdown table (default %(default)s)")
    args = p.parse_args(argv)
    try:
        beams = [int(b) for b in args.beams.split(",")]
    except ValueError:
        raise HBAFError(f"--beams {args.beams!r}: give beam sizes as integers, e.g. 5,1") from None
    if not beams or min(beams) < 1:
        raise HBAFError(f"--beams {args.beams!r}: beam sizes are 1 or more")
    import os
    import platform

    from bench.recogniser import demo_utterances, meld_utterances

    with tempfile.TemporaryDirectory(prefix="hbaf-ct2-int8-") as tmp:
        utts = demo_utterances() if args.clips == "demo" else meld_utterances(Path(tmp))  # the demo's turns first
        n_demo = len(demo_utterances()) if args.clips == "meld" else len(utts)
        models = torch_models(args.threads)
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "clips": len(utts), "demo_clips": n_demo, "threads": args.threads,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}",
            "speech": "synthetic: espeak-ng demo" + ("" if args.clips == "demo" else ", MELD texts in MELD-TTS voices"),
            "encoder": encoder_table(utts, models, args.threads),
            "recognition": {b: recognition_table(utts, models, b, args.threads, n_demo) for b in beams}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
