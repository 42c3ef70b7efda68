"""The recogniser's two halves behind seams: an ``AudioEncoder`` and a ``TextDecoder``.

``WhisperASR`` (edge_runtime/asr.py) turns an utterance into Whisper's log-mel window, asks an
``AudioEncoder`` for the encoder output, keeps the utterance's own frames for the emotion model
and hands the output to a ``TextDecoder``. Each half has several forms, chosen independently
(``hbaf-edge run --asr-encoder ... --asr-decoder ...``), so our encoder may feed CTranslate2's
decoder and the other way round:

| form | encoder | decoder |
|---|---|---|
| ``ct2`` | CTranslate2 (int8 on a CPU, float16 on CUDA) | CTranslate2 ``generate`` |
| ``torch`` | hbaf/whisper.py on the CPU (float32) or CUDA (float16) | the same model, one step at a time with its cache |
| ``*.onnx`` | ONNX Runtime (CPU; CUDA/TensorRT providers when present) | ONNX Runtime, the first-step and step graphs |

The graphs come from ``hbaf-export asr`` (export/asr_export.py); their names and metadata are
checked at load, so a fusion model or a decoder given as the encoder is refused in one line.
Every form decodes with the same rules (edge_runtime/whisper_decode.py reproduces
CTranslate2's), so a change of form changes the speed, not the transcript.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hbaf.contract import (
    ASR_DECODER_FIRST,
    ASR_DECODER_STEP,
    ASR_ENCODER,
    ASR_GRAPHS,
    AsrGraphInfo,
    asr_graph_name,
    first_line,
    read_onnx,
)
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

CT2 = "ct2"
TORCH = "torch"
FORMS = (CT2, TORCH)  # named forms; anything else is a graph file


@dataclass
class Encoded:
    """One encoder pass over a window: ``states`` [1, T, W] (numpy, or a torch tensor on the
    encoder's device), or a CTranslate2 StorageView (``native``) converted on first use."""

    states: Any = None  # numpy [1, T, W] or a torch tensor
    native: Any = None  # a CTranslate2 StorageView when a CTranslate2 encoder made it

    def host_states(self) -> np.ndarray:
        """The states as float32 numpy [1, T, W]."""
        if self.states is None:
            native = self.native
            if str(getattr(native, "device", "cpu")) != "cpu":
                import ctranslate2

                native = native.to_device(ctranslate2.Device.cpu)
            self.states = np.asarray(native, dtype=np.float32)
        if hasattr(self.states, "detach"):  # a torch tensor
            self.states = self.states.detach().float().cpu().numpy()
        return self.states

    def storage_view(self) -> Any:
        """The output as CTranslate2 takes it (a decoder of another form's encoder)."""
        if self.native is None:
            import ctranslate2

            self.native = ctranslate2.StorageView.from_array(np.ascontiguousarray(self.host_states(), dtype=np.float32))
        return self.native


class AudioEncoder(Protocol):
    name: str

    def encode(self, mel: np.ndarray) -> Encoded:
        """Whisper log-mel of one window [80, F] -> the encoder output."""
        ...


# ----------------------------------------------------------------------------- encoders


class CT2Encoder:
    """CTranslate2's encoder of a loaded faster-whisper model."""

    name = CT2

    def __init__(self, whisper_model: Any) -> None:
        self.model = whisper_model

    def encode(self, mel: np.ndarray) -> Encoded:
        return Encoded(native=self.model.encode(mel))


class TorchEncoder:
    """hbaf/whisper.py's encoder: CPU float32 or CUDA (float16 by default)."""

    name = TORCH

    def __init__(self, model: str | None = None, *, device: str = "cpu", fp16: bool | None = None,
                 threads: int | None = None) -> None:
        import torch

        from hbaf.whisper import load_whisper_torch

        if device == "cuda" and not torch.cuda.is_available():
            raise HBAFError("--asr-encoder torch on cuda: this torch build sees no CUDA GPU; use --asr-device cpu")
        if threads and device == "cpu":
            torch.set_num_threads(int(threads))
        self.device = device
        self.fp16 = bool(fp16) if fp16 is not None else device == "cuda"
        self.whisper = load_whisper_torch(model, device=device, fp16=self.fp16)
        self.name = f"{TORCH}-{device}-{'fp16' if self.fp16 else 'fp32'}"

    def encode(self, mel: np.ndarray) -> Encoded:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None].to(self.device)
            if self.fp16:
                x = x.half()
            states, _ = self.whisper.encoder(x)
        return Encoded(states=states)


def ort_session(path: Path, *, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """An ONNX Runtime session of ``path`` (TensorRT, CUDA, then CPU providers, those present),
    or a one-line HBAFError."""
    import onnxruntime as ort

    from edge_runtime.backends import default_providers

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    chosen = providers or default_providers(ort.get_available_providers())
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        why = " ".join(first_line(err, 200).split())
        raise HBAFError(f"ONNX Runtime cannot load {path} ({why}); export it again with `hbaf-export asr --out DIR`") from err


def read_asr_graph(path: str | Path, role: str) -> AsrGraphInfo:
    """The metadata of a recogniser graph file, checked to be a ``role`` graph."""
    p = Path(path)
    proto = read_onnx(p, load_external_data=False, check_io=False)
    info = AsrGraphInfo.from_proto(proto, str(p))
    if info.role != role:
        raise HBAFError(f"{p} is the recogniser's {info.role} graph, not its {role}; pass "
                        f"{asr_graph_name(info.model, role, info.precision)} (from `hbaf-export asr`)")
    names = {i.name for i in proto.graph.input}
    missing = [n for n in ASR_GRAPHS[role].input_names if n not in names]
    if missing:
        raise HBAFError(f"{p} lacks inputs {missing}; export it again with `hbaf-export asr --out DIR`")
    return info


class OnnxEncoder:
    """The encoder graph through ONNX Runtime: mel -> states."""

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.path = Path(path)
        self.info = read_asr_graph(self.path, ASR_ENCODER)
        self.session = ort_session(self.path, threads=threads, providers=providers)
        self.name = f"onnx-{self.info.precision}"

    def encode(self, mel: np.ndarray) -> Encoded:
        frames = int(round(self.info.window_s * 100))
        if mel.shape[-1] != frames:
            raise HBAFError(f"{self.path.name} takes a {self.info.window_s:g} s window ({frames} mel frames), got "
                            f"{mel.shape[-1]}; use the recogniser's default window or export the graph for this one")
        (states,) = self.session.run(None, {"mel": np.ascontiguousarray(mel[None], dtype=np.float32)})
        return Encoded(states=states)


def open_encoder(form: str | None, *, whisper_model: Any, model: str | None = None, device: str = "cpu",
                 threads: int | None = None) -> AudioEncoder:
    """The ``AudioEncoder`` that ``form`` names: "ct2" (or None), "torch", or an encoder graph file."""
    t0 = time.perf_counter()
    if form in (None, CT2):
        return CT2Encoder(whisper_model)
    if form == TORCH:
        enc: AudioEncoder = TorchEncoder(model, device=device, threads=threads)
    else:
        path = Path(form).expanduser()
        if path.suffix == ".engine":
            from edge_runtime.trt_asr import TrtEncoder

            enc = TrtEncoder(path)
        elif path.suffix == ".onnx" or path.exists():
            enc = OnnxEncoder(path, threads=threads)
        else:
            raise HBAFError(f"--asr-encoder {form!r}: not ct2, torch or an encoder graph file; export one with `hbaf-export asr --out DIR`")
    log.info("ASR encoder %s loaded in %.2f s", enc.name, time.perf_counter() - t0)
    return enc
