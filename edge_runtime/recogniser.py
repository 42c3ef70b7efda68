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

An encoder pass also gives the inner layers the emotion model may read (``encode(mel,
layers=("block2",))``: the decoder's input and the model's from the same pass). Our forms can
(PyTorch: every layer; an encoder graph or engine: the ``inner`` outputs its metadata lists, all of
them since they were added); CTranslate2 cannot, so ``encoder_for_layers`` picks one of ours when
the model reads an inner layer and no encoder form was asked for.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hbaf.contract import (
    ASR_DECODER_FIRST,
    ASR_DECODER_STEP,
    ASR_ENCODER,
    ASR_GRAPHS,
    AsrGraphInfo,
    asr_engine_graph,
    encoder_layer_name,
    asr_graph_name,
    read_onnx,
)
from edge_runtime.whisper_decode import DecoderStep, Generated, SpecialTokens, TorchDecoderStep, generate
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

CT2 = "ct2"
TORCH = "torch"
# our PyTorch Whisper in CTranslate2's CPU int8 arithmetic (hbaf/ct2_int8.py): slow, and the
# form closest to today's transcripts, for checking our graphs against them (docs/RECOGNISER.md)
TORCH_INT8 = "torch-int8"
ASR_EXPORT = "hbaf-export asr --out DIR"  # what writes the recogniser's graphs


@dataclass
class Encoded:
    """One encoder pass over a window: ``states`` [1, T, W] (numpy, or a torch tensor on the
    encoder's device), or a CTranslate2 StorageView (``native``) converted on first use."""

    states: Any = None  # numpy [1, T, W] or a torch tensor
    native: Any = None  # a CTranslate2 StorageView when a CTranslate2 encoder made it
    inner: dict[str, Any] = field(default_factory=dict)  # inner layers asked for, by name ("block2"): [1, T, W]

    def host_layer(self, name: str) -> np.ndarray:
        """An inner layer asked for in ``encode(..., layers=...)`` (``"states"``: the final one) as
        float32 numpy [1, T, W]."""
        if name == "states":
            return self.host_states()
        if name not in self.inner:
            raise HBAFError(f"the encoder pass was not asked for its {name} layer; pass layers=({name!r},) to encode")
        value = self.inner[name]
        if hasattr(value, "detach"):  # a torch tensor
            value = self.inner[name] = value.detach().float().cpu().numpy()
        return value

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
    inner_layers: tuple[str, ...]  # the inner layers an encode call can give ("conv", "block1", ...); () for CTranslate2

    def encode(self, mel: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        """Whisper log-mel of one window [80, F] -> the encoder output, and the inner ``layers``
        (names from ``inner_layers``) from the same pass."""
        ...


def _check_layers(encoder: Any, layers: tuple[str, ...], graph: str | None = None) -> None:
    """A one-line error when ``encoder`` cannot give every one of ``layers``; ``graph``: the file
    it was opened from (the check at load, which names it)."""
    missing = [name for name in layers if name not in encoder.inner_layers]
    if not missing:
        return
    if graph is not None:
        raise HBAFError(f"the encoder graph {graph} has no {missing[0]} output, which the emotion model reads (it was exported "
                        "before the inner layers were); export it again with `hbaf-export asr --out DIR`")
    raise HBAFError(f"the recogniser's encoder {encoder.name} cannot give its {missing[0]} layer; "
                    + ("CTranslate2 gives only the last one: use --asr-encoder torch or an encoder graph from `hbaf-export asr`"
                       if encoder.name == CT2 else "export the encoder graph again with `hbaf-export asr --out DIR`"))


# ----------------------------------------------------------------------------- encoders


class CT2Encoder:
    """CTranslate2's encoder of a loaded faster-whisper model."""

    name = CT2
    inner_layers: tuple[str, ...] = ()  # CTranslate2 returns the last layer only

    def __init__(self, whisper_model: Any) -> None:
        self.model = whisper_model

    def encode(self, mel: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        _check_layers(self, layers)
        return Encoded(native=self.model.encode(mel))


def load_torch_whisper(model: str | None, device: str, fp16: bool, threads: int | None, int8: bool = False) -> Any:
    """hbaf/whisper.py's model on ``device`` (a one-line error where torch sees no CUDA GPU);
    ``int8``: in CTranslate2's CPU int8 arithmetic (CPU only)."""
    import torch

    from hbaf.whisper import load_whisper_torch

    if int8 and device != "cpu":
        raise HBAFError(f"the recogniser's {TORCH_INT8} form is CTranslate2's CPU int8 arithmetic; use --asr-device cpu, "
                        f"or {TORCH} for PyTorch on {device}")
    if device == "cuda" and not torch.cuda.is_available():
        raise HBAFError("the recogniser's torch form on cuda: this torch build sees no CUDA GPU; use --asr-device cpu")
    if threads and device == "cpu":
        torch.set_num_threads(int(threads))
    if int8:
        return load_whisper_torch(model, int8="ct2")
    return load_whisper_torch(model, device=device, fp16=fp16)


class TorchEncoder:
    """hbaf/whisper.py's encoder: CPU float32, CUDA (float16 by default) or (``int8``)
    CTranslate2's CPU int8 arithmetic."""

    name = TORCH

    def __init__(self, model: str | None = None, *, device: str = "cpu", fp16: bool | None = None,
                 threads: int | None = None, int8: bool = False) -> None:
        self.device = device
        self.fp16 = bool(fp16) if fp16 is not None else device == "cuda" and not int8
        self.whisper = load_torch_whisper(model, device, self.fp16, threads, int8=int8)
        self.name = f"{TORCH}-{device}-{'int8' if int8 else 'fp16' if self.fp16 else 'fp32'}"
        self.inner_layers = tuple(encoder_layer_name(i) for i in range(self.whisper.dims.encoder_layers))

    def encode(self, mel: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        import torch

        _check_layers(self, layers)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))[None].to(self.device)
            if self.fp16:
                x = x.half()
            states, inner = self.whisper.encoder(x, layers=tuple(self.inner_layers.index(n) for n in layers))
        return Encoded(states=states, inner=dict(zip(layers, inner)))


def ort_session(path: Path, *, threads: int | None = None, providers: list[str] | None = None) -> Any:
    """An ONNX Runtime session of a recogniser graph (edge_runtime.backends.ort_session), whose idle
    threads sleep rather than spin. The recogniser's sessions run one after another on the same
    cores (encoder, decoder first step, decoder steps with the search's Python between them, often
    beside CTranslate2's threads), and a session's threads go on spinning after its run: the next
    one then shares the cores with them. Two encoder sessions run back to back took 66 ms each
    spinning vs 34 ms not (2 threads, 10 s window); a whole recognition with both ONNX Runtime
    halves, 243 vs 275 ms p50 on a quiet machine and 317-342 vs 489-696 ms under load (12 demo
    turns, beam 5)."""
    from edge_runtime.backends import ort_session as open_session

    return open_session(path, threads=threads, providers=providers, quiet=True, spin=False,
                        fix="export it again with `hbaf-export asr --out DIR`")


def read_asr_graph(path: str | Path, role: str) -> AsrGraphInfo:
    """The metadata of a recogniser graph file, checked to be a ``role`` graph."""
    p = Path(path)
    proto = read_onnx(p, load_external_data=False, check_io=False, export=ASR_EXPORT)
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
        self.window_s, self.whisper_name = self.info.window_s, self.info.model
        outputs = {o.name for o in self.session.get_outputs()}
        self.inner_layers = tuple(n for n in self.info.inner if n in outputs)

    def encode(self, mel: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        frames = int(round(self.info.window_s * 100))
        if mel.shape[-1] != frames:
            raise HBAFError(f"{self.path.name} takes a {self.info.window_s:g} s window ({frames} mel frames), got "
                            f"{mel.shape[-1]}; use the recogniser's default window or export the graph for this one")
        _check_layers(self, layers)
        states, *inner = self.session.run(["states", *layers], {"mel": np.ascontiguousarray(mel[None], dtype=np.float32)})
        return Encoded(states=states, inner=dict(zip(layers, inner)))


class EngineEncoder:
    """The encoder graph as a TensorRT engine (``hbaf-export engine --onnx whisper-...encoder...onnx``)."""

    def __init__(self, path: str | Path, *, device: int = 0) -> None:
        from edge_runtime.trt_runner import EngineRunner

        self.runner = EngineRunner(path, device=device, graph=asr_engine_graph(ASR_ENCODER),
                                   shape_fix="the recogniser feeds one fixed window; rebuild the engine from its encoder graph")
        self.window_s = self.runner.profile_shapes["mel"][2][-1] / 100
        self.name = f"tensorrt-{self.runner.sidecar.precision}"
        self.inner_layers = tuple(n for n in self.runner.output_names if n != "states")

    def encode(self, mel: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        _check_layers(self, layers)
        out = self.runner.run({"mel": np.ascontiguousarray(mel[None], dtype=np.float32)})
        return Encoded(states=out["states"], inner={n: out[n] for n in layers})



def default_graph_dirs() -> list[Path]:
    """Where ``hbaf-export asr`` puts the recogniser's graphs unless told otherwise: ``$HBAF_HOME/asr``
    and ``hbaf-models/asr`` under the working directory."""
    from hbaf.io import hbaf_home

    return [hbaf_home() / "asr", Path("hbaf-models") / "asr"]


def find_encoder_graph(whisper_name: str, layers: tuple[str, ...], dirs: list[Path]) -> Path | None:
    """The first ONNX Runtime CPU INT8 encoder graph of ``whisper_name`` in ``dirs`` that gives
    ``layers``; None when there is none (a graph exported before the inner outputs is passed over)."""
    for folder in dirs:
        path = Path(folder).expanduser() / asr_graph_name(whisper_name, ASR_ENCODER, "int8-cpu")
        if not path.is_file():
            continue
        try:
            info = read_asr_graph(path, ASR_ENCODER)
        except HBAFError as err:
            log.debug("passing over %s: %s", path, err)
            continue
        if info.model == whisper_name and all(name in info.inner for name in layers):
            return path
    return None


def encoder_for_layers(layers: tuple[str, ...], *, whisper_name: str, device: str = "cpu",
                       graph_dirs: list[Path] | None = None) -> str:
    """The encoder form to use when the emotion model reads inner ``layers`` and no form was asked
    for (CTranslate2, the default, gives the last layer only): on a CPU the exported INT8 encoder
    graph when one that gives them is at hand (beside the fusion model, in ``$HBAF_HOME/asr`` or
    ``hbaf-models/asr``: the fastest of our forms there, docs/RECOGNISER.md), else PyTorch (which
    runs on CUDA too). Says what it picked in one log line."""
    graph = find_encoder_graph(whisper_name, layers, list(graph_dirs or []) + default_graph_dirs()) if device == "cpu" else None
    form = str(graph) if graph is not None else TORCH
    # the run header names the encoder either way; the slower PyTorch fallback is worth a warning
    # on a CPU, since one export makes it faster
    say = log.warning if graph is None and device == "cpu" else log.info
    say("the emotion model reads the encoder's %s layer, which CTranslate2 does not give: the recogniser's encoder is %s "
        "(one pass for both; --asr-encoder chooses another)", "/".join(layers),
        f"the ONNX Runtime INT8 graph {graph}" if graph is not None else
        f"PyTorch on {device}" + (f" (export the faster INT8 graph with `hbaf-export asr --out {default_graph_dirs()[0]}`)"
                                  if device == "cpu" else ""))
    return form


def open_encoder(form: str | None, *, whisper_model: Any, model: str | None = None, device: str = "cpu",
                 threads: int | None = None, layers: tuple[str, ...] = (), whisper_name: str | None = None,
                 graph_dirs: list[Path] | None = None) -> AudioEncoder:
    """The ``AudioEncoder`` that ``form`` names: "ct2", "torch", "torch-int8", or an encoder graph file. None is
    CTranslate2, unless the emotion model reads inner ``layers``: then one of ours
    (``encoder_for_layers``). A form asked for that cannot give ``layers`` is a one-line error."""
    t0 = time.perf_counter()
    if form is None and layers:
        form = encoder_for_layers(layers, whisper_name=whisper_name or os.path.basename(str(model or "tiny.en")),
                                  device=device, graph_dirs=graph_dirs)
    if form in (None, CT2):
        if layers:
            raise HBAFError(f"--asr-encoder ct2 cannot give the encoder's {'/'.join(layers)} layer that the emotion model reads "
                            "(CTranslate2 returns the last layer only); leave --asr-encoder out to run ours once for both, "
                            "or pass torch or an encoder graph from `hbaf-export asr`")
        return CT2Encoder(whisper_model)
    if form in (TORCH, TORCH_INT8):
        enc: AudioEncoder = TorchEncoder(model, device=device, threads=threads, int8=form == TORCH_INT8)
    else:
        path = Path(form).expanduser()
        if path.suffix == ".engine":
            enc = EngineEncoder(path)
        elif path.suffix == ".onnx" or path.exists():
            enc = OnnxEncoder(path, threads=threads)
        else:
            raise HBAFError(f"--asr-encoder {form!r}: not ct2, torch, torch-int8 or an encoder graph file; export one with `hbaf-export asr --out DIR`")
    _check_layers(enc, layers, graph=form)
    log.info("ASR encoder %s loaded in %.2f s", enc.name, time.perf_counter() - t0)
    return enc


# ----------------------------------------------------------------------------- decoders


@dataclass(frozen=True)
class DecodeRules:
    """How one window is decoded (faster-whisper's rules, as ``WhisperASR`` sets them)."""

    prompt: tuple[int, ...]  # sot sequence + no-timestamps
    max_length: int  # prompt + new tokens
    suppress_tokens: tuple[int, ...]
    special: SpecialTokens
    beam_size: int = 1
    patience: float = 1.0
    suppress_blank: bool = True
    temperature: float = 0.0  # > 0: sampling at this temperature (the fallback)
    seed: int = 0  # of the sampling


class TextDecoder(Protocol):
    name: str

    def generate(self, encoded: Encoded, rules: DecodeRules) -> Generated: ...


class CT2Decoder:
    """CTranslate2's ``generate`` of a loaded faster-whisper model."""

    name = CT2

    def __init__(self, whisper_model: Any) -> None:
        self.model = whisper_model

    def generate(self, encoded: Encoded, rules: DecodeRules) -> Generated:
        options: dict[str, Any] = {"beam_size": rules.beam_size, "patience": rules.patience}
        if rules.temperature > 0:
            import ctranslate2

            # seeds only a worker thread's first draw (CTranslate2 seeds each thread once); the graph
            # decoders restart from the seed on every call
            ctranslate2.set_random_seed(rules.seed)
            options = {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": rules.temperature}
        result = self.model.model.generate(
            encoded.storage_view(), [list(rules.prompt)], max_length=rules.max_length, return_scores=True,
            return_no_speech_prob=True, suppress_blank=rules.suppress_blank, suppress_tokens=list(rules.suppress_tokens),
            **options,
        )[0]
        return Generated(list(result.sequences_ids[0]), float(result.scores[0]), float(result.no_speech_prob))


class GraphDecoder:
    """Our decoder (any ``DecoderStep``: PyTorch, ONNX Runtime graphs, TensorRT engines) with
    CTranslate2's search (edge_runtime/whisper_decode.py)."""

    def __init__(self, step: DecoderStep, name: str) -> None:
        self.step, self.name = step, name

    def generate(self, encoded: Encoded, rules: DecodeRules) -> Generated:
        return generate(self.step, encoded.host_states(), rules.prompt, rules.special, max_length=rules.max_length,
                        beam_size=rules.beam_size, patience=rules.patience, suppress_tokens=rules.suppress_tokens,
                        suppress_blank=rules.suppress_blank, temperature=rules.temperature,
                        seed=rules.seed if rules.temperature > 0 else None)


class OrtGraph:
    """One graph through ONNX Runtime: ``run({input: array}) -> {output: array}``, the call a
    TensorRT ``EngineRunner`` answers too."""

    def __init__(self, path: Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.path = path
        self.session = ort_session(path, threads=threads, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class GraphDecoderStep:
    """``DecoderStep`` over the decoder's first-step and step graphs, behind any runner with
    ``run(feeds) -> outputs`` (``OrtGraph``, ``EngineRunner``). ``cross`` keeps the encoder
    states: the first-step graph computes the cross K/V from them. The cache is (self-attention
    keys/values [N, 2, rows, P, W], cross K/V [N, 2, 1, T, W]): the rows (beams) share the
    utterance's cross K/V, which the graphs broadcast, so ``select`` moves only the first."""

    def __init__(self, first: Any, step: Any) -> None:
        self.first, self.next = first, step

    def cross(self, states: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(states, dtype=np.float32)

    def step(self, tokens: np.ndarray, cross: np.ndarray, cache: Any) -> tuple[np.ndarray, Any]:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        if cache is None:
            out = self.first.run({"tokens": tokens, "states": cross})
            return out["logits"][:, -1], (out["cache"], out["cross_kv"])
        past, cross_kv = cache
        out = self.next.run({"tokens": tokens, "cross_kv": cross_kv, "past": past})
        return out["logits"][:, -1], (out["cache"], cross_kv)

    def select(self, cache: Any, rows: np.ndarray) -> Any:
        past, cross_kv = cache
        return np.take(past, np.asarray(rows), axis=2), cross_kv


def decoder_pair(path: str | Path) -> tuple[Path, Path, AsrGraphInfo]:
    """(first-step graph, step graph, metadata) from either file of the pair ``hbaf-export asr`` writes."""
    p = Path(path)
    proto = read_onnx(p, load_external_data=False, check_io=False, export=ASR_EXPORT)
    info = AsrGraphInfo.from_proto(proto, str(p))
    if info.role == ASR_ENCODER:
        raise HBAFError(f"{p} is the recogniser's encoder graph, not its decoder; pass "
                        f"{asr_graph_name(info.model, ASR_DECODER_STEP, info.precision)} (from `hbaf-export asr`)")
    files = {role: p.with_name(asr_graph_name(info.model, role, info.precision)) for role in (ASR_DECODER_FIRST, ASR_DECODER_STEP)}
    files[info.role] = p
    for role, f in files.items():
        if not f.exists():
            raise HBAFError(f"the decoder's {role} graph {f.name} is not beside {p.name}; export both with `hbaf-export asr --out {p.parent}`")
        other = read_asr_graph(f, role)
        if (other.model, other.precision, other.source_sha256) != (info.model, info.precision, info.source_sha256):
            raise HBAFError(f"{f.name} and {p.name} come from different exports; export both again with `hbaf-export asr --out {p.parent}`")
    return files[ASR_DECODER_FIRST], files[ASR_DECODER_STEP], info


def onnx_decoder(path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> GraphDecoder:
    """The decoder graph pair through ONNX Runtime, from either file."""
    first, step, info = decoder_pair(path)
    return GraphDecoder(GraphDecoderStep(OrtGraph(first, threads=threads, providers=providers),
                                         OrtGraph(step, threads=threads, providers=providers)), f"onnx-{info.precision}")


def engine_decoder(path: str | Path, *, device: int = 0) -> GraphDecoder:
    """The decoder's two TensorRT engines from either of them (built by ``hbaf-export engine`` from
    the pair of graphs, so their names differ only in the role)."""
    from edge_runtime.trt_runner import EngineRunner

    p = Path(path)
    names = {role: p.name.replace(ASR_DECODER_STEP, role).replace(ASR_DECODER_FIRST, role) for role in (ASR_DECODER_FIRST, ASR_DECODER_STEP)}
    if names[ASR_DECODER_FIRST] == names[ASR_DECODER_STEP]:
        raise HBAFError(f"{p.name} is not a decoder engine (its name has neither {ASR_DECODER_FIRST} nor {ASR_DECODER_STEP}); "
                        "build both with `hbaf-export engine --onnx whisper-tiny.en.decoder-....onnx`")
    runners = {role: EngineRunner(p.with_name(name), device=device, graph=asr_engine_graph(role),
                                  shape_fix="the transcript is longer than the engine's profile; rebuild it with a larger one")
               for role, name in names.items()}
    return GraphDecoder(GraphDecoderStep(runners[ASR_DECODER_FIRST], runners[ASR_DECODER_STEP]),
                        f"tensorrt-{runners[ASR_DECODER_STEP].sidecar.precision}")


def open_decoder(form: str | None, *, whisper_model: Any, model: str | None = None, device: str = "cpu",
                 threads: int | None = None) -> TextDecoder:
    """The ``TextDecoder`` that ``form`` names: "ct2" (or None), "torch", "torch-int8", or a decoder graph or
    engine file (either of the pair; the other is found beside it)."""
    if form in (None, CT2):
        return CT2Decoder(whisper_model)
    t0 = time.perf_counter()
    if form in (TORCH, TORCH_INT8):
        int8 = form == TORCH_INT8
        fp16 = device == "cuda" and not int8
        dec: TextDecoder = GraphDecoder(TorchDecoderStep(load_torch_whisper(model, device, fp16, threads, int8=int8), device=device,
                                                         fp16=fp16), f"{TORCH}-{device}-{'int8' if int8 else 'fp16' if fp16 else 'fp32'}")
    else:
        path = Path(form).expanduser()
        if path.suffix == ".engine":
            dec = engine_decoder(path)
        elif path.suffix == ".onnx" or path.exists():
            dec = onnx_decoder(path, threads=threads)
        else:
            raise HBAFError(f"--asr-decoder {form!r}: not ct2, torch, torch-int8 or a decoder graph file; export one with `hbaf-export asr --out DIR`")
    log.info("ASR decoder %s loaded in %.2f s", dec.name, time.perf_counter() - t0)
    return dec
