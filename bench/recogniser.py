"""The recogniser's benchmark: the audio encoder, the decoder and whole recognition, every form
in one run on the same utterances.

Utterances: the demo conversation's twelve turns (edge_runtime/demo.py; **synthetic speech**,
espeak-ng), cut at the script's turn boundaries with the VAD's 64 ms pad, each with its
reference text; or (``--asr-clips meld``) those and the turns of a 60 s and a 300 s MELD
conversation (MELD-TTS voices, also synthetic). Three tables:

- **Audio encoder**: one 10 s window (log-mel -> states), per form; parity of the utterance's
  own frames with PyTorch FP32 and with CTranslate2 int8 (what the shipped models trained on).
- **Decoder**: every form decodes the same encoder output (PyTorch FP32's states) with the
  same rules, at beam 1 and beam 5: per utterance and per generated token; tokens identical
  to CTranslate2's decoder.
- **Recognition**: ``WhisperASR`` end to end (log-mel + encoder + decoder) per utterance, for
  the encoder/decoder pairs that matter (with the TensorRT engines built for this machine, where
  they are beside the graphs: ``engine_pick``); WER against the script and transcripts identical to
  today's recogniser (CTranslate2 int8 both halves).

Speed-ups are p50 ratios against PyTorch FP32 eager and against CTranslate2, measured in the
same run with the forms taking turns (``time_forms``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hbaf.contract import ASR_DECODER_STEP, ASR_ENCODER, SAMPLE_RATE, asr_graph_name

log = logging.getLogger(__name__)

PAD_S = 0.064  # the VAD's speech pad around each turn (edge_runtime/vad.py)
BEAMS = (1, 5)
CT2_ROW, TORCH_ROW = "ctranslate2 int8 (cpu)", "pytorch fp32 eager (cpu)"


@dataclass
class Utterance:
    samples: np.ndarray
    text: str


def demo_utterances() -> list[Utterance]:
    """The demo conversation's turns with their reference texts (synthetic speech)."""
    from edge_runtime.demo import demo_conversation, demo_script
    from hbaf.audio import load_audio

    wav = demo_conversation()
    audio = load_audio(wav)
    out = []
    for turn in demo_script(wav):
        a = max(0, int((turn["start"] - PAD_S) * SAMPLE_RATE))
        b = min(audio.size, int((turn["end"] + PAD_S) * SAMPLE_RATE))
        out.append(Utterance(audio[a:b].copy(), turn["text"]))
    return out


def meld_utterances(folder: Path) -> list[Utterance]:
    """The demo's turns, then the turns of a 60 s and a 300 s MELD conversation rendered into
    ``folder`` (MELD's real texts, MELD-TTS voices: synthetic speech), cut 0.1 s around each
    turn: the clips docs/LATENCY.md measures the recogniser's WER on."""
    from edge_runtime.demo import meld_conversation
    from hbaf.audio import load_audio

    out = demo_utterances()
    for seconds in (60.0, 300.0):
        sub = folder / f"meld-{seconds:.0f}"
        sub.mkdir(parents=True, exist_ok=True)
        wav, turns, _ = meld_conversation(sub, min_seconds=seconds)
        audio = load_audio(wav)
        for t in turns:
            a, b = max(0, int((t["start"] - 0.1) * SAMPLE_RATE)), int((t["end"] + 0.1) * SAMPLE_RATE)
            out.append(Utterance(audio[a:b].copy(), t["text"]))
    return out


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()), "n": int(a.size)}


def time_forms(forms: dict[str, Callable[[Any], Any]], items: list[Any], runs: int) -> dict[str, dict[str, float]]:
    """Each form's time per item (``runs`` passes over ``items``), the forms taking turns in
    blocks with a pause before each (``edge_runtime.timing.time_in_turns``): timed one after
    another, a form would share the cores with the last one's still-spinning threads (PyTorch's
    OpenMP, CTranslate2's) and drift of a shared machine would fall on one form only. Every form
    sees the items in the same order."""
    from edge_runtime.timing import time_in_turns

    def cycling(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        at = [0]

        def call() -> Any:
            item = items[at[0] % len(items)]
            at[0] += 1
            return fn(item)
        return call

    ms = time_in_turns({name: cycling(fn) for name, fn in forms.items()}, runs=max(1, runs) * len(items),
                       warmup=1, chunk_warmup=1)
    return {name: _stats(times) for name, times in ms.items()}


def _speedups(rows: dict[str, dict], key: str = "p50_ms") -> None:
    """Each row's p50 speed-up against the PyTorch FP32 eager and the CTranslate2 rows."""
    for name, ref in (("vs_torch", TORCH_ROW), ("vs_ct2", CT2_ROW)):
        base = rows.get(ref, {}).get(key)
        for row in rows.values():
            if base and row.get(key):
                row[name] = base / row[key]


def _frames_parity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from export.asr_export import cosine

    return float(np.abs(a.astype(np.float64) - b).max()), cosine(a, b)


ENGINE_ROW = "tensorrt {precision} (gpu)"


def engine_pick(graphs: Path | None) -> Any:
    """The recogniser's TensorRT engines built for this machine beside ``graphs`` (its folder and
    the ``engines`` folder next to it, as ``hbaf-export all`` lays them out), the pick the runtime
    makes by default (``edge_runtime.asr_defaults``); None where there are none or they cannot run
    here (no TensorRT, no GPU, built elsewhere: the reason is logged)."""
    if graphs is None:
        return None
    from edge_runtime.asr_defaults import default_recogniser

    pick = default_recogniser("tiny.en", (), [graphs])
    if not pick.engines:
        log.info("recogniser bench: no TensorRT rows (%s)", pick.line())
        return None
    return pick


def _engine_row(path: Path) -> str:
    from hbaf.contract import parse_engine_name

    parts = parse_engine_name(Path(path).name) or {}
    return ENGINE_ROW.format(precision=parts.get("precision", "engine"))


def encoder_forms(graphs: Path | None, threads: int, whisper_model: Any, engines: Any = None) -> dict[str, Any]:
    """Every encoder form that can run here: CTranslate2, PyTorch (CPU; CUDA FP16 where a GPU is),
    ONNX Runtime FP32 and INT8 on the CPU (from ``graphs``), and the TensorRT engine of ``engines``
    (``engine_pick``) where there is one."""
    import torch

    from edge_runtime.recogniser import CT2Encoder, OnnxEncoder, TorchEncoder

    forms: dict[str, Any] = {CT2_ROW: CT2Encoder(whisper_model), TORCH_ROW: TorchEncoder(device="cpu", threads=threads)}
    if graphs is not None:
        for precision in ("fp32", "int8-cpu", "int8-trt"):  # int8-trt: TensorRT's Q/DQ form, run here for its accuracy
            path = graphs / asr_graph_name("tiny.en", ASR_ENCODER, precision)
            if path.is_file():
                forms[f"onnxruntime {precision} (cpu)"] = OnnxEncoder(path, threads=threads, providers=["CPUExecutionProvider"])
    if torch.cuda.is_available():
        forms["pytorch fp16 (cuda)"] = TorchEncoder(device="cuda")
    if engines is not None:
        from edge_runtime.recogniser import EngineEncoder

        forms[_engine_row(engines.encoder)] = EngineEncoder(engines.encoder)
    return forms


def decoder_forms(graphs: Path | None, threads: int, whisper_model: Any, engines: Any = None) -> dict[str, Any]:
    """Every decoder form that can run here (as ``encoder_forms``)."""
    import torch

    from edge_runtime.recogniser import CT2Decoder, open_decoder, onnx_decoder

    forms: dict[str, Any] = {CT2_ROW: CT2Decoder(whisper_model),
                             TORCH_ROW: open_decoder("torch", whisper_model=whisper_model, device="cpu", threads=threads)}
    if graphs is not None:
        for precision in ("fp32", "int8-cpu"):
            path = graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, precision)
            if path.is_file():
                forms[f"onnxruntime {precision} (cpu)"] = onnx_decoder(path, threads=threads, providers=["CPUExecutionProvider"])
    if torch.cuda.is_available():
        forms["pytorch fp16 (cuda)"] = open_decoder("torch", whisper_model=whisper_model, device="cuda")
    if engines is not None:
        from edge_runtime.recogniser import engine_decoder

        forms[_engine_row(engines.decoder)] = engine_decoder(engines.decoder)
    return forms


def bench_encoders(forms: dict[str, Any], mels: list[np.ndarray], lengths: list[int], runs: int) -> dict[str, dict]:
    """Per form: the 10 s window's encode time, and parity of the utterances' own frames."""
    from hbaf.encoder import utterance_states

    states = {name: [utterance_states(enc.encode(mel).host_states(), n) for mel, n in zip(mels, lengths)]
              for name, enc in forms.items()}
    rows = time_forms({name: (lambda mel, enc=enc: enc.encode(mel).host_states()) for name, enc in forms.items()}, mels, runs)
    for name, row in rows.items():
        for ref_name, key in ((TORCH_ROW, "vs_torch"), (CT2_ROW, "vs_ct2")):
            if ref_name in states and name != ref_name:
                pairs = [_frames_parity(a, b) for a, b in zip(states[name], states[ref_name])]
                row[f"max_abs_{key}"] = max(p[0] for p in pairs)
                row[f"cosine_{key}"] = min(p[1] for p in pairs)
    _speedups(rows)
    return rows


def bench_decoders(forms: dict[str, Any], encoded: list[Any], rules_for: Callable[[int], Any], runs: int) -> dict[str, dict]:
    """Per form and beam: time per utterance and per generated token; tokens identical to CTranslate2's."""
    out: dict[str, dict] = {name: {} for name in forms}
    for beam in BEAMS:
        rules = rules_for(beam)
        tokens = {name: [list(dec.generate(enc, rules).tokens) for enc in encoded] for name, dec in forms.items()}
        rows = time_forms({name: (lambda enc, dec=dec: dec.generate(enc, rules)) for name, dec in forms.items()}, encoded, runs)
        _speedups(rows)
        ref = tokens.get(CT2_ROW)
        for name, row in rows.items():
            # + the end token each decode also computed; the mean over passes that visit every utterance alike
            computed = sum(len(t) + 1 for t in tokens[name])
            row["per_token_ms"] = row["mean_ms"] * len(encoded) / max(computed, 1)
            if ref is not None:
                row["identical_to_ct2"] = f"{sum(a == b for a, b in zip(tokens[name], ref))}/{len(ref)}"
            out[name][f"beam{beam}"] = row
    return out


def bench_recognition(asrs: dict[str, Any], utts: list[Utterance], runs: int) -> dict[str, dict]:
    """Per encoder/decoder pair: ``WhisperASR.transcribe`` per utterance, WER, identical transcripts."""
    from hbaf.wer import corpus_wer

    texts = {name: [asr.transcribe(u.samples).text for u in utts] for name, asr in asrs.items()}
    rows = time_forms({name: (lambda u, asr=asr: asr.transcribe(u.samples)) for name, asr in asrs.items()}, utts, runs)
    ref = texts.get(CT2_ROW)
    for name, row in rows.items():
        row["wer"] = corpus_wer([(u.text, h) for u, h in zip(utts, texts[name])])
        if ref is not None:
            row["identical_to_ct2"] = f"{sum(a == b for a, b in zip(texts[name], ref))}/{len(ref)}"
    _speedups(rows)
    return rows


def fusion_agreement(forms: dict[str, Any], manifest: Path, model: Path, threads: int) -> dict[str, dict]:
    """The emotion model's answers with each encoder form's states on the manifest's test dialogues
    (reference texts), through the runtime's offline path: top-1 agreement with the answers on
    CTranslate2's states (what the model trained on) and accuracy against the labels."""
    from edge_runtime.model_files import open_backend
    from edge_runtime.offline import run_dialogues
    from hbaf.data.manifest import load_manifest
    from hbaf.data.store import group_dialogues
    from hbaf.encoder import window_input, window_mel, utterance_states
    from hbaf.audio import load_audio

    records = [r for r in load_manifest(manifest) if r.split == "test"]
    groups = group_dialogues(records)
    backend = open_backend(model, threads=threads)
    tokenizer = backend.tokenizer()
    kind = backend.spec.feature_kind
    mels, lengths = [], []
    for r in records:
        wave, n = window_input(load_audio(r.audio), kind)
        mels.append(window_mel(wave))
        lengths.append(n)
    labels = np.array([backend.labels.index(r.label) if r.label in backend.labels else -1 for r in records])
    top1: dict[str, np.ndarray] = {}
    out: dict[str, dict] = {}
    for name, enc in forms.items():
        feats = [utterance_states(enc.encode(m).host_states(), n, kind) for m, n in zip(mels, lengths)]
        probs = run_dialogues(backend, tokenizer, groups, feats, [r.text for r in records])["probs"]
        top1[name] = probs.argmax(axis=1)
        out[name] = {"utterances": len(records), "accuracy": float(np.mean(top1[name] == labels))}
    ref = top1.get(CT2_ROW)
    for name in out:
        if ref is not None:
            out[name]["top1_agreement_vs_ct2"] = float(np.mean(top1[name] == ref))
    return out


CLIP_SETS = ("demo", "meld")


def run_recogniser_bench(graphs: Path | None, *, threads: int = 2, runs: int = 1, beam: int = 5,
                         manifest: Path | None = None, model: Path | None = None, clips: str = "demo") -> dict[str, Any]:
    """The three tables on the demo's utterances. ``graphs``: the folder ``hbaf-export asr`` wrote
    (None: only the CTranslate2 and PyTorch rows). With ``manifest`` and the fusion ``model``, the
    encoder table also says how the model's answers change with each encoder form's states
    (the manifest's test dialogues)."""
    from edge_runtime.asr import WhisperASR
    from edge_runtime.recogniser import DecodeRules
    from faster_whisper.transcribe import get_suppressed_tokens
    from hbaf.encoder import WINDOW_S, load_whisper, window_mel
    from hbaf.whisper import load_whisper_torch
    import torch

    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="hbaf-asr-clips-")
    utts = demo_utterances() if clips == "demo" else meld_utterances(Path(tmp.name))
    whisper_model = load_whisper(cpu_threads=threads)
    mels = [window_mel(u.samples, WINDOW_S, whisper_model.feature_extractor) for u in utts]
    lengths = [u.samples.size for u in utts]
    speech = ("synthetic (espeak-ng demo conversation)" if clips == "demo" else
              "synthetic (the demo's turns and 60 s + 300 s of MELD dialogues in MELD-TTS voices)")
    report: dict[str, Any] = {"utterances": len(utts), "speech": speech, "runs": runs, "threads": threads}
    engines = engine_pick(graphs)  # once: it may probe TensorRT and the GPU
    encoders = encoder_forms(graphs, threads, whisper_model, engines)
    report["encoder"] = bench_encoders(encoders, mels, lengths, runs)
    if manifest is not None and model is not None:
        for name, row in fusion_agreement(encoders, manifest, model, threads).items():
            report["encoder"][name]["fusion"] = row

    from edge_runtime.recogniser import Encoded
    from edge_runtime.whisper_decode import SpecialTokens
    from faster_whisper.tokenizer import Tokenizer

    tok = Tokenizer(whisper_model.hf_tokenizer, False, task="transcribe", language=None)
    prompt = tuple(tok.sot_sequence) + (tok.no_timestamps,)
    suppress = tuple(get_suppressed_tokens(tok, [-1]))
    cap = int(12 * WINDOW_S)

    def rules_for(beam_size: int) -> DecodeRules:
        return DecodeRules(prompt, len(prompt) + cap, suppress, SpecialTokens.of(tok), beam_size=beam_size)

    whisper = load_whisper_torch()
    with torch.inference_mode():
        encoded = [Encoded(states=whisper.encoder(torch.from_numpy(m)[None])[0].numpy()) for m in mels]
    report["decoder"] = bench_decoders(decoder_forms(graphs, threads, whisper_model, engines), encoded, rules_for, runs)

    pairs = {CT2_ROW: (None, None), TORCH_ROW: ("torch", "torch")}
    if graphs is not None:
        enc8 = graphs / asr_graph_name("tiny.en", ASR_ENCODER, "int8-cpu")
        dec8 = graphs / asr_graph_name("tiny.en", ASR_DECODER_STEP, "int8-cpu")
        if enc8.is_file() and dec8.is_file():
            pairs["ct2 encoder + onnxruntime int8 decoder (cpu)"] = (None, str(dec8))
            pairs["onnxruntime int8 encoder + ct2 decoder (cpu)"] = (str(enc8), None)
            pairs["onnxruntime int8 (cpu)"] = (str(enc8), str(dec8))
        if engines is not None:
            pairs[_engine_row(engines.encoder)] = (str(engines.encoder), str(engines.decoder))
    asrs = {name: WhisperASR(device="cpu", cpu_threads=threads, beam_size=beam, encoder=e, decoder=d) for name, (e, d) in pairs.items()}
    report["recognition"] = bench_recognition(asrs, utts, runs)
    report["beam"] = beam
    report["seconds"] = time.perf_counter() - t0
    tmp.cleanup()
    return report
