"""The export contract: the one definition of what passes between a trained HBAF model and
whatever runs it (checkpoint, both ONNX graphs, TensorRT engines, Torch-TensorRT programs,
every runtime backend, calibration and the benchmark).

    inputs   audio_feats [B,T,F] f32, audio_mask [B,T] f32, input_ids [B,L] i32,
             attention_mask [B,L] i32, memory [B,K,D] f32, memory_mask [B,K] f32
    outputs  probs [B,C] f32, utt_emb [B,D] f32, gate [B,2] f32
             and, where the model has them, audio_probs [B,C] f32, text_probs [B,C] f32

B, T (audio frames, <= ``MAX_FRAMES``) and L (tokens, <= ``MAX_TOKENS``) are dynamic; K (the
dialogue-memory slots) and D (the memory width) are fixed per model; F is the audio feature
width; C the number of labels. The graph is stateless: the caller owns the dialogue memory.
``audio_probs`` and ``text_probs`` are the audio-alone and text-alone heads (what the voice says,
what the words say); a graph has them when its ``ModelSpec.outputs`` (metadata ``outputs``) lists
them, which models exported before they existed do not: consumers treat them as optional.

What lives here, each defined once:

- the limits and the audio formats (sample rate; ``FEATURE_FORMATS``: what ``audio_feats`` holds
  for each kind of model input, its width and frame hop; 10 s, 128 tokens, the default text
  encoder);
- ``TensorSpec`` for every input and output (name, dtype, axes);
- ``ModelSpec``: the few facts a consumer needs about one model (labels, K, D, feature width,
  limits, sample rate, text encoder, graph kind), read from a checkpoint, a model or ONNX
  metadata, and written into ONNX metadata and engine sidecars;
- the ONNX file form: reading and writing the ``hbaf`` metadata entry, loading an ONNX file
  with one-line errors, atomic saving, which graph kind a file holds;
- TensorRT engine naming, the optimization profile, the sidecar and the compatibility check
  (pure data: nothing here imports TensorRT);
- feed building: one utterance or a padded batch in the contract's names, shapes and dtypes.

This module imports only numpy and the standard library at load time (``onnx`` lazily), so
the runtime, export, calibration and the benchmark can all depend on it. It is one file of
about 700 lines on purpose: every fact a producer and a consumer must agree on is in
one place, which is the point of having a contract.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- limits and audio format

SAMPLE_RATE = 16000  # Hz, mono: every source is resampled to this
MAX_SECONDS = 10.0  # the longest utterance a model takes (the segmenter cuts longer speech)
WHISPER_WINDOW_S = 30.0  # Whisper's own input window: the recogniser's standard path (its short one is MAX_SECONDS)


@dataclass(frozen=True)
class FeatureFormat:
    """What ``audio_feats`` holds for one kind of model input (hbaf.features computes each)."""

    kind: str
    dim: int  # F
    hop: int  # samples per frame
    subsample: int  # the audio encoder's conv stride (every format reaches 25 frames/s inside the model)
    layer: int | None = None  # an inner encoder layer (0: the convolution stem, i: block i); None: the final layer norm

    @property
    def encoder_output(self) -> str:
        """The recogniser's encoder-graph output that holds this input (``states``: the final one)."""
        return "states" if self.layer is None else encoder_layer_name(self.layer)

    @property
    def max_frames(self) -> int:
        """Frames of a ``MAX_SECONDS`` utterance: the T limit of a model of this format."""
        return int(MAX_SECONDS * SAMPLE_RATE) // self.hop

    @property
    def frames_per_second(self) -> float:
        return SAMPLE_RATE / self.hop

    def frames_for(self, num_samples: int) -> int:
        """Frames ``hbaf.features.utterance_features`` returns for ``num_samples`` samples."""
        if self.kind == LOG_MEL:
            return min(self.max_frames, 1 + num_samples // self.hop)
        return min(self.max_frames, max(1, -(-num_samples // self.hop)))


def encoder_layer_name(layer: int) -> str:
    """An inner encoder layer's name: ``conv`` (the convolution stem, layer 0) or ``block<i>``
    (after block i). It is both the suffix of the feature kind that reads the layer
    (``whisper-tiny.en:block2``) and the name of the encoder graph's output that carries it."""
    return "conv" if layer == 0 else f"block{layer}"


LOG_MEL = "log-mel"  # 80 mel bins every 10 ms (release 1's input)
WHISPER_TINY_EN = "whisper-tiny.en"  # the ASR's own encoder output: 384-d every 20 ms (hbaf.encoder)
WHISPER_TINY_EN_BLOCKS = 4  # tiny.en's encoder blocks: inner layers 0 (conv stem) .. 4
# Inner layers of the same encoder pass (``whisper-tiny.en:block2``): the residual stream after a
# block, before the final layer norm, computed by our PyTorch/ONNX/TensorRT encoder (CTranslate2
# gives only the last layer). On real acted speech the middle block carries the most emotion
# (docs/VOICES.md, "Which encoder layer").
WHISPER_TINY_EN_LAYERS = {
    f"{WHISPER_TINY_EN}:{encoder_layer_name(i)}": i for i in range(WHISPER_TINY_EN_BLOCKS + 1)
}
FEATURE_FORMATS = {
    LOG_MEL: FeatureFormat(LOG_MEL, 80, 160, 4),
    WHISPER_TINY_EN: FeatureFormat(WHISPER_TINY_EN, 384, 320, 2),
    **{kind: FeatureFormat(kind, 384, 320, 2, layer) for kind, layer in WHISPER_TINY_EN_LAYERS.items()},
}
FEATURE_KIND = WHISPER_TINY_EN  # what new models take
# what `hbaf train` reads unless --features says otherwise: the encoder's middle block, which
# carries the most emotion of real speech (a linear probe on real acted speech: 0.93 accuracy vs
# 0.77 for the last layer; docs/VOICES.md, "Which encoder layer")
TRAIN_FEATURE_KIND = f"{WHISPER_TINY_EN}:block2"
LEGACY_FEATURE_KIND = LOG_MEL  # what a checkpoint or export that names no kind was trained on
FEATURE_DIM = FEATURE_FORMATS[FEATURE_KIND].dim  # F of new models
HOP_LENGTH = FEATURE_FORMATS[LOG_MEL].hop  # the log-mel hop (10 ms)
MAX_FRAMES = max(f.max_frames for f in FEATURE_FORMATS.values())  # T <= 1000 for any format


def feature_format(kind: str) -> FeatureFormat:
    """The format of ``kind``; a one-line error for a kind this release does not know."""
    try:
        return FEATURE_FORMATS[kind]
    except KeyError:
        raise HBAFError(f"unknown audio feature kind {kind!r} (this release knows {', '.join(FEATURE_FORMATS)}); "
                        "upgrade hbaf-edge or export the model again") from None

MAX_TOKENS = 128  # L
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILE = "tokenizer.json"  # shipped next to every exported model

# ----------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract. Axes: "B", "T", "L" (dynamic), "K", "D", "C", "F" (fixed per
    model) or a number."""

    name: str
    dtype: str  # numpy dtype name: float32 | int32
    axes: tuple[str | int, ...]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def onnx_type(self) -> int:
        from onnx import TensorProto

        return {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "int64": TensorProto.INT64}[self.dtype]


INPUTS = (
    TensorSpec("audio_feats", "float32", ("B", "T", "F")),
    TensorSpec("audio_mask", "float32", ("B", "T")),
    TensorSpec("input_ids", "int32", ("B", "L")),
    TensorSpec("attention_mask", "int32", ("B", "L")),
    TensorSpec("memory", "float32", ("B", "K", "D")),
    TensorSpec("memory_mask", "float32", ("B", "K")),
)
OUTPUTS = (
    TensorSpec("probs", "float32", ("B", "C")),
    TensorSpec("utt_emb", "float32", ("B", "D")),
    TensorSpec("gate", "float32", ("B", 2)),
)
# The uni-modal heads, exported since release 2.2: every graph of a two-modality model has both
# (a single-modality ablation has its own one). Optional, so older graphs still run.
AUDIO_PROBS = "audio_probs"  # the audio-alone head: what the voice says
TEXT_PROBS = "text_probs"  # the text-alone head: what the words say
HEAD_OUTPUTS = (
    TensorSpec(AUDIO_PROBS, "float32", ("B", "C")),
    TensorSpec(TEXT_PROBS, "float32", ("B", "C")),
)
ALL_OUTPUTS = OUTPUTS + HEAD_OUTPUTS
INPUT_NAMES = tuple(s.name for s in INPUTS)
OUTPUT_NAMES = tuple(s.name for s in OUTPUTS)  # the outputs every graph has
HEAD_OUTPUT_NAMES = tuple(s.name for s in HEAD_OUTPUTS)
ALL_OUTPUT_NAMES = OUTPUT_NAMES + HEAD_OUTPUT_NAMES
OUTPUT_SPECS = {s.name: s for s in ALL_OUTPUTS}
DYNAMIC_AXES = {"B": "batch", "T": "frames", "L": "tokens"}  # axis letter -> symbolic dim name in the graphs
INPUT_DTYPES = {s.name: s.np_dtype for s in INPUTS}


def outputs_for(modalities: str) -> tuple[str, ...]:
    """The outputs of a model of ``modalities`` ("both" | "audio" | "text"): the three every graph
    has, then the uni-modal head(s) it has."""
    heads = {"both": HEAD_OUTPUT_NAMES, "audio": (AUDIO_PROBS,), "text": (TEXT_PROBS,)}.get(modalities, ())
    return OUTPUT_NAMES + heads


def known_outputs(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` cut to the outputs this release knows, in the contract's order (a newer graph's
    extra outputs are left alone); the three every graph has are always included."""
    given = {str(n) for n in names}
    return OUTPUT_NAMES + tuple(n for n in HEAD_OUTPUT_NAMES if n in given)

# ----------------------------------------------------------------------------- graph kinds

GRAPH_CONTRACT = "contract"  # standard opset-17 operators: TensorRT, engines, the trt INT8 flavour
GRAPH_ORT_CPU = "ort-cpu"  # ONNX Runtime CPU kernels (com.microsoft fused attention); ONNX Runtime only
GRAPHS = (GRAPH_CONTRACT, GRAPH_ORT_CPU)
MS_DOMAIN = "com.microsoft"

# ----------------------------------------------------------------------------- model spec

METADATA_KEY = "hbaf"  # ONNX metadata_props key holding the JSON below
QUANT_METADATA_KEY = "hbaf_quantization"  # how an INT8 file was calibrated and quantized


@dataclass(frozen=True)
class ModelSpec:
    """What a consumer needs to know about one model, whatever form it takes."""

    labels: tuple[str, ...]
    context_size: int  # K
    memory_dim: int  # D
    feature_dim: int | None = None  # F (None: the width of ``feature_kind``)
    feature_kind: str = FEATURE_KIND
    max_frames: int | None = None  # None: the format's 10 s
    max_tokens: int = MAX_TOKENS
    sample_rate: int = SAMPLE_RATE
    text_encoder: str = DEFAULT_TEXT_ENCODER
    outputs: tuple[str, ...] = OUTPUT_NAMES  # the graph's outputs (absent from older metadata: the three)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "outputs", known_outputs(self.outputs))
        fmt = feature_format(self.feature_kind)
        if self.feature_dim is None:
            object.__setattr__(self, "feature_dim", fmt.dim)
        if self.max_frames is None:
            object.__setattr__(self, "max_frames", fmt.max_frames)
        if not self.labels:
            raise HBAFError("the model has no labels; export it again from a checkpoint")
        if self.context_size < 0 or self.memory_dim <= 0 or self.feature_dim <= 0:
            raise HBAFError(f"model sizes K={self.context_size}, D={self.memory_dim}, F={self.feature_dim} are invalid; "
                            "export the model again from its checkpoint")
        if not 1 <= self.max_frames <= MAX_FRAMES or not 1 <= self.max_tokens <= MAX_TOKENS:
            raise HBAFError(f"model limits {self.max_frames} frames / {self.max_tokens} tokens exceed the contract "
                            f"({MAX_FRAMES} / {MAX_TOKENS}); export the model again")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def head_outputs(self) -> tuple[str, ...]:
        """The uni-modal head outputs this model's graph has (``AUDIO_PROBS``, ``TEXT_PROBS``; () for older graphs)."""
        return tuple(n for n in self.outputs if n in HEAD_OUTPUT_NAMES)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], labels: Sequence[str], memory_dim: int | None = None) -> "ModelSpec":
        """From a model config (``HBAFConfig.to_dict()``) and its labels; D is the fusion width."""
        return cls(
            labels=tuple(labels),
            context_size=int(config["context_size"]),
            memory_dim=int(memory_dim if memory_dim is not None else config["d_model"]),
            feature_kind=str(config.get("feature_kind") or LEGACY_FEATURE_KIND),
            max_tokens=min(MAX_TOKENS, int(config.get("max_tokens", MAX_TOKENS))),
            text_encoder=str(config.get("text_encoder") or DEFAULT_TEXT_ENCODER),
            outputs=outputs_for(str(config.get("modalities") or "both")),
        )

    @classmethod
    def from_model(cls, model: Any) -> "ModelSpec":
        """From an ``hbaf.model.HBAF`` (its config, labels and memory width)."""
        return cls.from_config(model.cfg.to_dict(), model.labels, model.memory_dim)

    def to_metadata(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["outputs"] = list(self.outputs)
        return data

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], *, source: str = "model") -> "ModelSpec":
        """From the flat JSON written by ``to_metadata`` (older exports lack the format keys:
        they default to this release's log-mel input)."""
        labels = meta.get("labels")
        if not labels:
            raise HBAFError(f"{source} carries no HBAF labels in its metadata; export it with `hbaf-export onnx --checkpoint DIR`")
        config = meta.get("config") or {}
        try:
            kwargs: dict[str, Any] = {
                "labels": tuple(str(x) for x in labels),
                "context_size": int(meta["context_size"]),
                "memory_dim": int(meta["memory_dim"]),
            }
            for f in fields(cls):
                if f.name in kwargs or f.name not in meta and f.name not in config:
                    continue
                value = meta.get(f.name, config.get(f.name))
                if f.name == "outputs" and not isinstance(value, (list, tuple)):
                    raise TypeError(f"'outputs' is {type(value).__name__}, not a list")
                kwargs[f.name] = int(value) if f.name in ("feature_dim", "max_frames") else type(f.default)(value)
            kwargs.setdefault("feature_kind", LEGACY_FEATURE_KIND)
            if "feature_dim" not in kwargs and "n_mels" in config:
                kwargs["feature_dim"] = int(config["n_mels"])
        except (KeyError, TypeError, ValueError) as err:
            raise HBAFError(f"{source} has malformed HBAF metadata ({err}); export the model again") from err
        return cls(**kwargs)

    def check_same_model(self, other: "ModelSpec", what: str, fix: str) -> None:
        """Raise when two forms of a model disagree on labels, K, D, F or the feature kind (``what`` names them)."""
        diffs = [name for name in ("labels", "context_size", "memory_dim", "feature_dim", "feature_kind")
                 if getattr(self, name) != getattr(other, name)]
        if diffs:
            raise HBAFError(f"{what} are not the same model ({', '.join(diffs)} differ); {fix}")

    def input_shapes(self, batch: int, frames: int, tokens: int) -> dict[str, tuple[int, ...]]:
        """The shape of every contract input for these dynamic sizes."""
        sizes = {"B": batch, "T": frames, "L": tokens, "K": self.context_size, "D": self.memory_dim,
                 "F": self.feature_dim, "C": self.num_classes}
        return {s.name: tuple(sizes[a] if isinstance(a, str) else a for a in s.axes) for s in INPUTS}

    @staticmethod
    def feed_sizes(feeds: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
        """(batch, frames, tokens) of a set of feeds."""
        b, t = feeds["audio_feats"].shape[:2]
        return int(b), int(t), int(feeds["input_ids"].shape[1])

    def output_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """The shape of every output this model's graph has."""
        sizes = {"B": batch, "D": self.memory_dim, "C": self.num_classes}
        return {n: tuple(sizes[a] if isinstance(a, str) else a for a in OUTPUT_SPECS[n].axes) for n in self.outputs}


# ----------------------------------------------------------------------------- feeds


def make_feeds(
    spec: ModelSpec,
    feats: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    memory: np.ndarray,
    memory_mask: np.ndarray,
    *,
    min_frames: int = 1,
    max_frames: int | None = None,
    min_tokens: int = 1,
) -> dict[str, np.ndarray]:
    """One utterance (batch 1) in the contract's names, shapes and dtypes.

    Frames beyond ``max_frames`` (default: the model's) are cut; inputs shorter than an engine
    profile's minimum are padded with masked-out frames / tokens (mask 0), which the model ignores.
    """
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim == 2:
        feats = feats[None]
    if feats.ndim != 3 or feats.shape[0] != 1 or feats.shape[2] != spec.feature_dim:
        raise HBAFError(f"audio features of shape {feats.shape} do not fit the model's [1, T, {spec.feature_dim}]; "
                        f"compute them with hbaf.features.utterance_features(wave, {spec.feature_kind!r})")
    feats = feats[:, : min(spec.max_frames, max_frames or spec.max_frames)]
    feeds = {
        "audio_feats": feats,
        "audio_mask": np.ones(feats.shape[:2], dtype=np.float32),
        "input_ids": np.asarray(input_ids, dtype=np.int32).reshape(1, -1),
        "attention_mask": np.asarray(attention_mask, dtype=np.int32).reshape(1, -1),
        "memory": np.asarray(memory, dtype=np.float32).reshape(1, spec.context_size, spec.memory_dim),
        "memory_mask": np.asarray(memory_mask, dtype=np.float32).reshape(1, spec.context_size),
    }
    return pad_feeds(feeds, min_frames=min_frames, min_tokens=min_tokens)


def pad_feeds(feeds: Mapping[str, np.ndarray], *, min_frames: int = 1, min_tokens: int = 1) -> dict[str, np.ndarray]:
    """Feeds (any batch) padded up to ``min_frames`` frames and ``min_tokens`` tokens with
    masked-out positions (an engine profile's minimum), contiguous in the contract's dtypes."""
    out = dict(feeds)
    frames, tokens = out["audio_feats"].shape[1], out["input_ids"].shape[1]
    if frames < min_frames:
        pad = ((0, 0), (0, min_frames - frames))
        out["audio_feats"] = np.pad(out["audio_feats"], (*pad, (0, 0)))
        out["audio_mask"] = np.pad(out["audio_mask"], pad)
    if tokens < min_tokens:
        pad = ((0, 0), (0, min_tokens - tokens))
        out["input_ids"] = np.pad(out["input_ids"], pad)
        out["attention_mask"] = np.pad(out["attention_mask"], pad)
    return {k: np.ascontiguousarray(out[k], dtype=INPUT_DTYPES[k]) for k in INPUT_NAMES}


def batch_feeds(
    spec: ModelSpec,
    feats: Sequence[np.ndarray],
    ids: Sequence[np.ndarray],
    memory: np.ndarray,
    memory_mask: np.ndarray,
) -> dict[str, np.ndarray]:
    """Utterances of different lengths as one padded batch: ``feats[i]`` [T_i, F], ``ids[i]``
    [L_i] (unpadded token ids), ``memory`` [B, K, D], ``memory_mask`` [B, K]. Padding is masked."""
    b = len(feats)
    if b == 0 or len(ids) != b:
        raise HBAFError("a batch needs as many token sequences as feature sequences, and at least one")
    cut = [np.asarray(f, dtype=np.float32)[: spec.max_frames] for f in feats]
    bad = next((f.shape for f in cut if f.ndim != 2 or f.shape[1] != spec.feature_dim), None)
    if bad is not None:
        raise HBAFError(f"audio features of shape {bad} do not fit the model's [T, {spec.feature_dim}]; "
                        f"compute them with hbaf.features.utterance_features(wave, {spec.feature_kind!r})")
    t = max(f.shape[0] for f in cut)
    length = max(1, max(int(np.asarray(i).size) for i in ids))
    x = np.zeros((b, t, spec.feature_dim), np.float32)
    xmask = np.zeros((b, t), np.float32)
    tok = np.zeros((b, length), np.int32)
    tmask = np.zeros((b, length), np.int32)
    for i, (f, row) in enumerate(zip(cut, ids)):
        row = np.asarray(row, dtype=np.int32).reshape(-1)
        x[i, : f.shape[0]] = f
        xmask[i, : f.shape[0]] = 1.0
        tok[i, : row.size] = row
        tmask[i, : row.size] = 1
    return {"audio_feats": x, "audio_mask": xmask, "input_ids": tok, "attention_mask": tmask,
            "memory": np.ascontiguousarray(memory, dtype=np.float32).reshape(b, spec.context_size, spec.memory_dim),
            "memory_mask": np.ascontiguousarray(memory_mask, dtype=np.float32).reshape(b, spec.context_size)}


def check_outputs(out: Mapping[str, Any], where: str, names: Sequence[str] = OUTPUT_NAMES) -> dict[str, np.ndarray]:
    """The outputs ``names`` (a ``ModelSpec.outputs``; default the three every graph has) as float32
    arrays, or a one-line error naming ``where`` when one is missing."""
    names = known_outputs(names)
    missing = [k for k in names if k not in out]
    if missing:
        raise HBAFError(f"{where} does not produce outputs {missing}; it does not follow the HBAF export contract, export it again")
    return {k: np.asarray(out[k], dtype=np.float32) for k in names}


# ----------------------------------------------------------------------------- ONNX file form


def first_line(err: BaseException, limit: int = 240) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def read_onnx(path: str | os.PathLike, *, load_external_data: bool = True, check_io: bool = True, export: str | None = None):
    """Load an ONNX file; a missing, empty, truncated or foreign file is a one-line HBAFError.
    ``export``: the command that writes such a file (default: the fusion model's ``hbaf-export onnx``)."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise HBAFError(f"ONNX file not found: {p}; export one with `{export or f'hbaf-export onnx --checkpoint DIR --out {p.name}'}`")
    if p.is_dir():
        raise HBAFError(f"{p} is a folder; pass the .onnx file inside it")
    if p.stat().st_size == 0:
        raise HBAFError(f"ONNX file {p} is empty (0 bytes); export it again with `{export or 'hbaf-export onnx'}`")
    try:
        proto = onnx.load(str(p), load_external_data=load_external_data)
    except Exception as err:  # DecodeError, truncated protobuf, missing external data
        raise HBAFError(f"{p} is not a readable ONNX model ({first_line(err, 120)}); the file is corrupt or truncated: export it again") from err
    if proto.ir_version == 0 or not proto.HasField("graph") or not proto.graph.node:
        raise HBAFError(f"{p} is not an ONNX model (no graph); the file is corrupt: export it again with `hbaf-export onnx`")
    if check_io:
        names = {i.name for i in proto.graph.input}
        missing = [n for n in INPUT_NAMES if n not in names]
        if missing:
            raise HBAFError(f"{p} lacks inputs {missing}; it does not follow the HBAF export contract: export it with `hbaf-export onnx`")
    return proto


def onnx_metadata(proto, key: str = METADATA_KEY) -> dict[str, Any]:
    """The JSON object stored under metadata key ``key`` ({} when absent)."""
    for prop in proto.metadata_props:
        if prop.key == key:
            try:
                value = json.loads(prop.value)
            except ValueError as err:
                raise HBAFError(f"ONNX metadata '{key}' is not valid JSON ({err}); export the model again") from err
            if not isinstance(value, dict):
                raise HBAFError(f"ONNX metadata '{key}' is not a JSON object; export the model again")
            return value
    return {}


def set_onnx_metadata(proto, info: Mapping[str, Any], key: str = METADATA_KEY) -> None:
    """Replace (or add) the JSON metadata entry ``key``."""
    for prop in list(proto.metadata_props):
        if prop.key == key:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key = key
    entry.value = json.dumps(dict(info), sort_keys=True)


def memory_input_dims(proto) -> tuple[int, int] | None:
    """(K, D) as the graph's ``memory`` input declares them, None when not fixed."""
    for vi in proto.graph.input:
        if vi.name == "memory":
            dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            if len(dims) == 3 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
                return int(dims[1]), int(dims[2])
    return None


def spec_from_onnx(proto, *, source: str = "ONNX model") -> ModelSpec:
    """The ModelSpec an exported file carries; its metadata must agree with its ``memory`` input."""
    spec = ModelSpec.from_metadata(onnx_metadata(proto), source=source)
    dims = memory_input_dims(proto)
    if dims is not None and dims != (spec.context_size, spec.memory_dim):
        raise HBAFError(f"{source}: metadata says K={spec.context_size}, D={spec.memory_dim} but the graph's memory input is "
                        f"K={dims[0]}, D={dims[1]}; export the model again")
    check_graph_against_spec(proto, spec, source)
    return spec


def _last_dim(values, name: str) -> int | None:
    """The fixed size of the last axis of graph input/output ``name`` (None when symbolic)."""
    for vi in values:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return int(dims[-1].dim_value) if dims and dims[-1].HasField("dim_value") else None
    return None


def check_graph_against_spec(proto, spec: ModelSpec, source: str) -> None:
    """The metadata must describe the graph it travels with: the contract's output names, the
    feature width of the metadata's feature kind on ``audio_feats``, one class per label on
    ``probs`` and D on ``utt_emb`` (a mismatch would fail at the first utterance, or worse,
    give labels to the wrong classes)."""
    fix = "the metadata does not match the graph; export the model again with `hbaf-export onnx --checkpoint DIR`"
    outputs = [o.name for o in proto.graph.output]
    missing = [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        raise HBAFError(f"{source}: the graph's outputs are {outputs}, the contract needs {list(OUTPUT_NAMES)} "
                        f"({', '.join(missing)} missing); export the model again with `hbaf-export onnx --checkpoint DIR`")
    missing = [n for n in spec.head_outputs if n not in outputs]
    if missing:
        raise HBAFError(f"{source}: the graph's outputs are {outputs}, its metadata lists {list(spec.outputs)} "
                        f"({', '.join(missing)} missing); export the model again with `hbaf-export onnx --checkpoint DIR`")
    doubled = sorted({label for label in spec.labels if spec.labels.count(label) > 1})
    if doubled:
        raise HBAFError(f"{source}: metadata lists label(s) {doubled} more than once in {list(spec.labels)}; {fix}")
    kind_width = feature_format(spec.feature_kind).dim
    if spec.feature_dim != kind_width:  # the runtime computes the features by kind
        raise HBAFError(f"{source}: metadata says feature kind {spec.feature_kind} ({kind_width} values per frame) "
                        f"but feature_dim {spec.feature_dim}; {fix}")
    width = _last_dim(proto.graph.input, "audio_feats")
    if width is not None and width != spec.feature_dim:
        raise HBAFError(f"{source}: metadata says {spec.feature_kind} features of width {spec.feature_dim}, the graph's "
                        f"audio_feats input takes {width}; {fix}")
    for name in ("probs", *spec.head_outputs):
        classes = _last_dim(proto.graph.output, name)
        if classes is not None and classes != spec.num_classes:
            raise HBAFError(f"{source}: metadata lists {spec.num_classes} labels {list(spec.labels)}, the graph's {name} output "
                            f"has {classes} classes; {fix}")
    emb = _last_dim(proto.graph.output, "utt_emb")
    if emb is not None and emb != spec.memory_dim:
        raise HBAFError(f"{source}: metadata says D={spec.memory_dim}, the graph's utt_emb output has {emb}; {fix}")


def graph_kind(proto) -> str:
    """Which graph a file holds: its metadata's ``graph`` entry when present, else ``ort-cpu`` when
    it has com.microsoft nodes (an opset import alone does not count: ONNX Runtime's
    quantization pre-processing adds one to any graph), else ``contract``."""
    kind = onnx_metadata(proto).get("graph")
    if kind in GRAPHS:
        return kind
    return GRAPH_ORT_CPU if any(n.domain == MS_DOMAIN for n in proto.graph.node) else GRAPH_CONTRACT


def has_qdq(proto) -> bool:
    """True when the graph (or one of its local functions) carries explicit Q/DQ nodes."""
    ops = {"QuantizeLinear", "DequantizeLinear"}
    return any(n.op_type in ops for n in proto.graph.node) or any(n.op_type in ops for f in proto.functions for n in f.node)


_PROTO_LIMIT = 2**31 - 1  # protobuf's 2 GB ceiling for a single-file model


def save_onnx(proto, out: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Path:
    """Write atomically; a single file below 2 GB, else weights in ``<name>.data`` next to it.

    ``verify(path)`` runs on the written temporary file; if it raises, ``out`` is left untouched.
    """
    import onnx

    from hbaf.io import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        if proto.ByteSize() < _PROTO_LIMIT:
            onnx.save_model(proto, str(tmp))
        else:  # the external file is referenced by name, so it is written under its final name
            onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=out.name + ".data", size_threshold=1024)
        if verify is not None:
            verify(tmp)
    return out


# ----------------------------------------------------------------------------- TensorRT engines

PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ".engine"
SIDECAR_FORMAT = 3  # 3: graph, shapes, L4T release and board (a format-2 sidecar reads as a fusion engine of unknown board)
GRAPH_FUSION = "fusion"  # the sidecar ``graph`` of an HBAF fusion engine (the six-input contract above)
PROFILE_METADATA_KEY = "hbaf_profile"  # ONNX metadata: a graph's own optimization profile (``ShapeProfile.to_dict``)


class Dims(NamedTuple):
    """One corner of the optimization profile: batch size, audio frames, text tokens."""

    batch: int
    frames: int
    tokens: int


def parse_dims(text: str, what: str = "profile") -> Dims:
    """``"1,300,32"`` (batch,frames,tokens) -> ``Dims``; bad text -> one-line HBAFError."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise HBAFError(f"{what} '{text}' is not three positive integers BATCH,FRAMES,TOKENS; write it like 1,300,32")
    return Dims(*(int(p) for p in parts))


max_ = max  # Profiles' fields shadow the builtin inside the class body


def format_dims(d: Sequence[int]) -> str:
    return ",".join(str(v) for v in d)


@dataclass(frozen=True)
class Profiles:
    """The one optimization profile: min/opt/max of batch, frames (T) and tokens (L)."""

    min: Dims = Dims(1, 16, 4)
    opt: Dims = Dims(1, 300, 32)
    max: Dims = Dims(8, MAX_FRAMES, MAX_TOKENS)

    def __post_init__(self) -> None:
        for corner in ("min", "opt", "max"):
            value = getattr(self, corner)
            if not isinstance(value, Dims):
                value = Dims(*(int(v) for v in value))
                object.__setattr__(self, corner, value)
            if any(v < 1 for v in value):
                raise HBAFError(f"--{corner} {format_dims(value)} has a size below 1; every size must be >= 1")
        for axis in Dims._fields:
            lo, mid, hi = (getattr(getattr(self, c), axis) for c in ("min", "opt", "max"))
            if not lo <= mid <= hi:
                raise HBAFError(f"profile {axis}: need min <= opt <= max, got {lo} / {mid} / {hi}; fix --min/--opt/--max")
        if self.max.frames > MAX_FRAMES:
            raise HBAFError(f"--max frames {self.max.frames} exceeds {MAX_FRAMES} ({MAX_SECONDS:g} s, the export contract); lower it")
        if self.max.tokens > MAX_TOKENS:
            raise HBAFError(f"--max tokens {self.max.tokens} exceeds {MAX_TOKENS} (the export contract); lower it")

    @classmethod
    def for_spec(cls, spec: ModelSpec, min: str | None = None, opt: str | None = None, max: str | None = None) -> "Profiles":
        """The profile of one model: its input format's frames for 0.16 s / 3 s / 10 s (16/300/1000
        log-mel frames, 8/150/500 Whisper-state frames) unless a corner is given; checked against
        the model's frame limit."""
        ratio = FEATURE_FORMATS[LOG_MEL].hop / feature_format(spec.feature_kind).hop
        base = cls()
        scaled = cls(min=base.min._replace(frames=max_(1, round(base.min.frames * ratio))),
                     opt=base.opt._replace(frames=round(base.opt.frames * ratio)),
                     max=base.max._replace(frames=spec.max_frames))
        profiles = cls.parse(min, opt, max, default=scaled)
        profiles.check(spec)
        return profiles

    def check(self, spec: ModelSpec) -> None:
        """A one-line error when the profile allows more frames than the model takes."""
        if self.max.frames > spec.max_frames:
            raise HBAFError(f"--max frames {self.max.frames} exceeds the model's {spec.max_frames} ({MAX_SECONDS:g} s of "
                            f"{spec.feature_kind} frames); lower it")

    @classmethod
    def parse(cls, min: str | None = None, opt: str | None = None, max: str | None = None,
              default: "Profiles | None" = None) -> "Profiles":
        """Build from CLI strings; an omitted corner keeps its default (``default``, else ``Profiles()``)."""
        default = default or cls()
        return cls(
            min=parse_dims(min, "--min") if min else default.min,
            opt=parse_dims(opt, "--opt") if opt else default.opt,
            max=parse_dims(max, "--max") if max else default.max,
        )

    def input_shapes(self, spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
        """(min, opt, max) shape of every contract input, for ``IOptimizationProfile.set_shape``."""
        corners = [spec.input_shapes(*d) for d in (self.min, self.opt, self.max)]
        return {name: tuple(c[name] for c in corners) for name in INPUT_NAMES}

    def to_dict(self) -> dict[str, list[int]]:
        return {c: list(getattr(self, c)) for c in ("min", "opt", "max")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Profiles":
        return cls(**{c: Dims(*data[c]) for c in ("min", "opt", "max")})

    def cli_args(self) -> list[str]:
        return ["--min", format_dims(self.min), "--opt", format_dims(self.opt), "--max", format_dims(self.max)]

    def shape_profile(self, spec: ModelSpec) -> "ShapeProfile":
        """The same profile as min/opt/max shapes by tensor name (what any engine runner reads)."""
        return ShapeProfile(self.input_shapes(spec))


Shape = tuple[int, ...]


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile of any graph: the (min, opt, max) shape of each input, by tensor
    name. The fusion model's ``Profiles`` is one of these over (batch, frames, tokens); the
    recogniser's graphs describe theirs directly (``from_axes``) or in their ONNX metadata
    (``PROFILE_METADATA_KEY``). Nothing here assumes a tensor name, a rank or where the batch is."""

    shapes: Mapping[str, tuple[Shape, Shape, Shape]]

    def __post_init__(self) -> None:
        clean: dict[str, tuple[Shape, Shape, Shape]] = {}
        for name, corners in dict(self.shapes).items():
            try:
                lo, mid, hi = (tuple(int(v) for v in c) for c in corners)
            except (TypeError, ValueError):
                raise HBAFError(f"profile of '{name}' is not three shapes (min, opt, max); write it like {name}:1x80x1000:1x80x1000:4x80x1000") from None
            if not len(lo) == len(mid) == len(hi):
                raise HBAFError(f"profile of '{name}': min/opt/max have different ranks ({_shape_text(lo)} / {_shape_text(mid)} / {_shape_text(hi)})")
            if any(v < 0 for v in lo) or any(not a <= b <= c for a, b, c in zip(lo, mid, hi)):
                raise HBAFError(f"profile of '{name}': need 0 <= min <= opt <= max on every axis, got "
                                f"{_shape_text(lo)} / {_shape_text(mid)} / {_shape_text(hi)}")
            clean[str(name)] = (lo, mid, hi)
        object.__setattr__(self, "shapes", clean)

    @classmethod
    def from_axes(cls, inputs: Sequence[TensorSpec], sizes: Mapping[str, int | Sequence[int]]) -> "ShapeProfile":
        """From tensor specs whose axes are letters: ``sizes`` gives each letter a fixed size or its
        (min, opt, max); a number in ``axes`` is a fixed size. A letter without a size is an error."""
        corners: dict[str, tuple[Shape, Shape, Shape]] = {}
        for spec in inputs:
            per_axis = []
            for axis in spec.axes:
                if isinstance(axis, int):
                    per_axis.append((axis, axis, axis))
                    continue
                if axis not in sizes:
                    raise HBAFError(f"no size for axis {axis} of input '{spec.name}'; give it a fixed size or a (min, opt, max) range")
                size = sizes[axis]
                per_axis.append((int(size),) * 3 if isinstance(size, int) else tuple(int(v) for v in size))
            corners[spec.name] = tuple(tuple(a[i] for a in per_axis) for i in range(3))  # type: ignore[assignment]
        return cls(corners)

    @classmethod
    def parse(cls, texts: Sequence[str]) -> "ShapeProfile":
        """From ``NAME:MIN:OPT:MAX`` strings with shapes written ``1x80x1000`` (``--shape`` flags)."""
        corners = {}
        for text in texts:
            parts = str(text).split(":")
            if len(parts) != 4 or not parts[0] or not all(re.fullmatch(r"\d+(x\d+)*", p) for p in parts[1:]):
                raise HBAFError(f"--shape '{text}' is not NAME:MIN:OPT:MAX with shapes like 1x80x1000; "
                                "write it like mel:1x80x1000:1x80x1000:4x80x1000")
            corners[parts[0]] = tuple(tuple(int(v) for v in p.split("x")) for p in parts[1:])
        return cls(corners)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    def covers(self, name: str, shape: Sequence[int]) -> bool:
        """Whether ``shape`` lies inside the profile of input ``name``."""
        lo, _, hi = self.shapes[name]
        return len(shape) == len(lo) and all(a <= v <= c for a, v, c in zip(lo, shape, hi))

    def describe(self, name: str) -> str:
        lo, _, hi = self.shapes[name]
        return f"{_shape_text(lo)}..{_shape_text(hi)}"

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(c[0]), "opt": list(c[1]), "max": list(c[2])} for n, c in self.shapes.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShapeProfile":
        return cls({n: (c["min"], c["opt"], c["max"]) for n, c in data.items()})

    def cli_args(self) -> list[str]:
        args: list[str] = []
        for name, (lo, mid, hi) in self.shapes.items():
            args += ["--shape", f"{name}:{_shape_text(lo)}:{_shape_text(mid)}:{_shape_text(hi)}"]
        return args


def sanitize_gpu_name(gpu_name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``, ``"Orin"`` -> ``"orin"`` (no dots, no spaces)."""
    name = re.sub(r"[^a-z0-9_]+", "-", gpu_name.strip().lower()).strip("-")
    return name or "unknown-gpu"


def engine_name(model_stem: str, trt_version: str, gpu_name: str, precision: str) -> str:
    """``<model>.<trt-version>.<gpu>.<precision>.engine``, e.g. ``student.10.3.0.30.orin.int8.engine``."""
    if precision not in PRECISIONS:
        raise HBAFError(f"precision '{precision}' is not one of {'|'.join(PRECISIONS)}")
    if not re.fullmatch(r"\d+(\.\d+)*", trt_version):
        raise HBAFError(f"TensorRT version '{trt_version}' is not like 10.3.0; check the tensorrt install")
    model = re.sub(r"[^A-Za-z0-9_-]+", "-", model_stem).strip("-") or "model"
    return f"{model}.{trt_version}.{sanitize_gpu_name(gpu_name)}.{precision}{ENGINE_SUFFIX}"


_ENGINE_RE = re.compile(r"^(?P<model>[A-Za-z0-9_-]+)\.(?P<trt>\d+(?:\.\d+)*)\.(?P<gpu>[a-z0-9_-]+)\.(?P<precision>fp32|fp16|int8)\.engine$")


def parse_engine_name(name: str) -> dict[str, str] | None:
    """Inverse of ``engine_name`` (model, trt, gpu, precision), or None for another naming."""
    m = _ENGINE_RE.match(Path(name).name)
    return m.groupdict() if m else None


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """The sidecar sits next to the engine: ``<engine>.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_command_for(onnx_path: str, precision: str, out_dir: str | os.PathLike,
                      profiles: "Profiles | ShapeProfile | None", workspace_mb: int) -> str:
    """The shell-quoted ``hbaf-export engine`` command line that builds an engine with these settings
    (``profiles`` None: no profile flags, so the build takes the model's own profile)."""
    args = ["hbaf-export", "engine", "--onnx", onnx_path, "--precision", precision, "--out", str(out_dir),
            *(profiles.cli_args() if profiles is not None else []), "--workspace-mb", str(workspace_mb)]
    return " ".join(shlex.quote(a) for a in args)


@dataclass
class Sidecar:
    """What an engine was built from and where it can run; stored as ``<engine>.json``.

    Any graph has one: ``graph`` says which (``GRAPH_FUSION``, or a recogniser graph's role);
    ``shapes`` is its optimization profile by tensor name. A fusion engine also carries its
    ``ModelSpec`` and ``Profiles`` (batch, frames, tokens), from which its shapes follow. On a
    Jetson, ``l4t_release`` (``/etc/nv_tegra_release``, e.g. "36.4.3") and ``board``
    (``/proc/device-tree/model``) say where it was built: every Orin reports the same GPU name
    and compute capability 8.7, so only the board tells an AGX Orin from an Orin Nano."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    package_version: str
    built_at: str
    model: ModelSpec | None = None
    profiles: Profiles | None = None
    graph: str = GRAPH_FUSION
    shapes: ShapeProfile | None = None
    l4t_release: str = ""
    board: str = ""
    onnx_path: str = ""
    engine_sha256: str = ""
    engine_bytes: int = 0
    workspace_mb: int = 1024
    strongly_typed: bool = False
    model_version: str = ""
    format: int = SIDECAR_FORMAT

    _REQUIRED = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                 "package_version", "built_at")
    _REQUIRED_FUSION = ("model", "profiles")

    def __post_init__(self) -> None:
        if self.graph == GRAPH_FUSION and (self.model is None or self.profiles is None):
            raise HBAFError("a fusion engine's sidecar needs the model spec and its profiles; rebuild the engine with `hbaf-export engine`")
        if self.graph != GRAPH_FUSION and self.shapes is None:
            raise HBAFError(f"the sidecar of a '{self.graph}' engine needs its input shapes; rebuild the engine with `hbaf-export engine`")

    @property
    def is_fusion(self) -> bool:
        return self.graph == GRAPH_FUSION

    def input_shapes(self) -> ShapeProfile:
        """The engine's optimization profile by tensor name."""
        if self.shapes is not None:
            return self.shapes
        return self.profiles.shape_profile(self.model)  # type: ignore[union-attr]  # a fusion sidecar has both

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["model"] = self.model.to_metadata() if self.model is not None else None
        data["profiles"] = self.profiles.to_dict() if self.profiles is not None else None
        data["shapes"] = self.shapes.to_dict() if self.shapes is not None else None
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "sidecar") -> "Sidecar":
        rebuild = "rebuild the engine with `hbaf-export engine`"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HBAFError(f"{source} is not valid JSON ({err.msg} at line {err.lineno}); {rebuild}") from err
        if not isinstance(data, dict):
            raise HBAFError(f"{source} is not a JSON object; {rebuild}")
        graph = str(data.get("graph") or GRAPH_FUSION)
        required = cls._REQUIRED_FUSION + cls._REQUIRED if graph == GRAPH_FUSION else cls._REQUIRED + ("shapes",)
        missing = [k for k in required if data.get(k) is None]
        if missing:
            raise HBAFError(f"{source} lacks {missing} (an engine from an older release?); {rebuild}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["graph"] = graph
        try:
            if graph == GRAPH_FUSION:
                kwargs["profiles"] = Profiles.from_dict(data["profiles"])
                if not isinstance(data["model"], dict):
                    raise TypeError("'model' is not an object")
                kwargs["model"] = ModelSpec.from_metadata(data["model"], source=source)
            else:
                kwargs["model"] = kwargs["profiles"] = None
            if data.get("shapes") is not None:
                if not isinstance(data["shapes"], dict):
                    raise TypeError("'shapes' is not an object")
                kwargs["shapes"] = ShapeProfile.from_dict(data["shapes"])
        except (KeyError, TypeError, ValueError, HBAFError) as err:
            raise HBAFError(f"{source} has a malformed field ({err}); {rebuild}") from err
        if kwargs["precision"] not in PRECISIONS:
            raise HBAFError(f"{source} has precision '{kwargs['precision']}', not one of {'|'.join(PRECISIONS)}; {rebuild}")
        return cls(**kwargs)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Sidecar":
        path = Path(path)
        return cls.from_json(path.read_text(encoding="utf-8"), source=f"sidecar {path}")

    def build_command(self, out_dir: str | os.PathLike | None = None) -> str:
        """The exact command that rebuilds this engine on the machine it is run on."""
        return build_command_for(self.onnx_path or "<model>.onnx", self.precision, out_dir if out_dir is not None else "engines",
                                 self.profiles if self.is_fusion else self.shapes, self.workspace_mb)


def engine_mismatches(sidecar: Sidecar, trt_version: str, gpu_name: str, compute_capability: str, *,
                      l4t_release: str = "", board: str = "") -> list[str]:
    """What differs between the machine that built an engine and this one ([] = none).

    ``l4t_release`` and ``board`` are this machine's ("" off a Jetson); they count only when the
    sidecar recorded them (sidecars before format 3 did not)."""
    mismatches = []
    if sidecar.tensorrt_version != trt_version:
        mismatches.append(f"TensorRT {sidecar.tensorrt_version} (this machine has {trt_version})")
    if sanitize_gpu_name(sidecar.gpu_name) != sanitize_gpu_name(gpu_name):
        mismatches.append(f"GPU {sidecar.gpu_name} (this machine has {gpu_name})")
    if str(sidecar.compute_capability) != str(compute_capability):
        mismatches.append(f"compute capability {sidecar.compute_capability} (this machine has {compute_capability})")
    if sidecar.board and sidecar.board != board:
        mismatches.append(f"board {sidecar.board} (this machine is {board or 'not a Jetson'})")
    if sidecar.l4t_release and sidecar.l4t_release != l4t_release:
        mismatches.append(f"Jetson Linux R{sidecar.l4t_release} (this machine has {('R' + l4t_release) if l4t_release else 'none'})")
    return mismatches


def check_engine_compat(sidecar: Sidecar, trt_version: str, gpu_name: str, compute_capability: str, *,
                        engine_path: str | os.PathLike | None = None, l4t_release: str = "", board: str = "") -> None:
    """Raise ``HBAFError`` (with the rebuild command) unless this machine matches the sidecar.

    A serialized engine is only valid for the exact TensorRT version and GPU model it was
    built with; deserializing elsewhere fails or, worse, runs untuned kernels. On a Jetson the
    board and the Jetson Linux release must match too (see ``Sidecar``).
    """
    mismatches = engine_mismatches(sidecar, trt_version, gpu_name, compute_capability, l4t_release=l4t_release, board=board)
    if not mismatches:
        return
    where = Path(engine_path) if engine_path is not None else None
    name = where.name if where is not None else "the engine"
    out_dir = where.parent if where is not None else None
    raise HBAFError(
        f"{name} was built for {', '.join(mismatches)}; engines only run on the TensorRT version and GPU "
        f"that built them: rebuild it on this machine with `{sidecar.build_command(out_dir)}`"
    )


# ----------------------------------------------------------------------------- the recogniser's graphs
#
# The recogniser (Whisper, hbaf/whisper.py) as three graphs (export/asr_export.py): the encoder,
# run once per utterance on a fixed window; the decoder's first step, which reads the encoder
# states once, computes every block's cross-attention keys and values and decodes the prompt;
# and its later steps (new tokens after the self-attention cache). The two halves meet only at
# the states, so any encoder form may feed any decoder form. Axes: B batch, M mel bins, F mel
# frames, T encoder frames (F / 2), W width, N decoder blocks, L new tokens, P cached tokens,
# S = P + L, V vocabulary; E is the cross K/V's batch, B or 1 (the beams of one utterance share
# its cross K/V: attention broadcasts it).

ASR_METADATA_KEY = "hbaf_asr"  # ONNX metadata_props key of a recogniser graph (JSON: AsrGraphInfo)
ASR_ENCODER = "encoder"
ASR_DECODER_FIRST = "decoder-first"
ASR_DECODER_STEP = "decoder-step"


@dataclass(frozen=True)
class GraphSpec:
    """The inputs and outputs of one graph, the one place they are named."""

    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic: Mapping[str, str]  # axis letter -> symbolic dim name

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


_STATES = TensorSpec("states", "float32", ("B", "T", "W"))
_TOKENS = TensorSpec("tokens", "int64", ("B", "L"))
_LOGITS = TensorSpec("logits", "float32", ("B", "L", "V"))
_CROSS = TensorSpec("cross_kv", "float32", ("N", 2, "B", "T", "W"))


def encoder_graph_spec(blocks: int) -> GraphSpec:
    """The encoder graph of a Whisper model with ``blocks`` encoder blocks: ``mel`` -> ``states``
    (the final layer norm: the decoder's input, and the input of ``whisper-tiny.en`` models) and
    every inner layer from the same pass, ``conv``, ``block1`` .. ``block<blocks>`` (each [B, T, W]:
    the input of the models whose feature kind names it). Graphs exported before the inner
    outputs existed have ``states`` alone; their metadata lists no ``inner``."""
    inner = tuple(TensorSpec(encoder_layer_name(i), "float32", ("B", "T", "W")) for i in range(blocks + 1))
    return GraphSpec(ASR_ENCODER, (TensorSpec("mel", "float32", ("B", "M", "F")),), (_STATES, *inner), {"B": "batch"})


ASR_GRAPHS = {
    ASR_ENCODER: encoder_graph_spec(WHISPER_TINY_EN_BLOCKS),
    ASR_DECODER_FIRST: GraphSpec(
        ASR_DECODER_FIRST,
        (_TOKENS, _STATES),
        (_LOGITS, TensorSpec("cache", "float32", ("N", 2, "B", "L", "W")), _CROSS),
        {"B": "batch", "L": "tokens"},
    ),
    ASR_DECODER_STEP: GraphSpec(
        ASR_DECODER_STEP,
        (_TOKENS, TensorSpec("cross_kv", "float32", ("N", 2, "E", "T", "W")), TensorSpec("past", "float32", ("N", 2, "B", "P", "W"))),
        (_LOGITS, TensorSpec("cache", "float32", ("N", 2, "B", "S", "W"))),
        {"B": "batch", "E": "encoded", "L": "tokens", "P": "past", "S": "total"},
    ),
}


@dataclass(frozen=True)
class AsrGraphInfo:
    """What a recogniser graph file says of itself (ONNX metadata ``hbaf_asr``)."""

    role: str  # a key of ASR_GRAPHS
    model: str  # the Whisper model ("tiny.en")
    precision: str  # fp32 | fp16 | int8
    window_s: float  # the encoder window the graph was exported for
    width: int
    layers: int  # decoder blocks (N)
    vocab: int
    source_sha256: str  # of the CTranslate2 model.bin the weights came from
    inner: tuple[str, ...] = ()  # an encoder graph's inner-layer outputs (``encoder_graph_spec``); () before they existed

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", tuple(str(x) for x in self.inner))

    def to_metadata(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["inner"] = list(self.inner)
        return data

    @classmethod
    def from_proto(cls, proto, source: str) -> "AsrGraphInfo":
        meta = onnx_metadata(proto, ASR_METADATA_KEY)
        if not meta:
            role = "an HBAF fusion model" if onnx_metadata(proto) else "not one of ours"
            raise HBAFError(f"{source} is not a recogniser graph ({role}); export the Whisper graphs with `hbaf-export asr --out DIR`")
        try:
            info = cls(**{k: meta[k] for k, f in cls.__dataclass_fields__.items() if k in meta or f.default is MISSING})
        except (KeyError, TypeError) as err:
            raise HBAFError(f"{source}: recogniser metadata is incomplete ({err}); export it again with `hbaf-export asr`") from err
        if info.role not in ASR_GRAPHS:
            raise HBAFError(f"{source}: unknown recogniser graph role {info.role!r}; export it again with `hbaf-export asr`")
        return info


def asr_engine_graph(role: str) -> str:
    """The ``graph`` an engine of a recogniser graph records in its sidecar."""
    return f"whisper-{role}"


def asr_graph_name(model: str, role: str, precision: str) -> str:
    """File name of a recogniser graph: ``whisper-<model>.<role>.<precision>.onnx``."""
    return f"whisper-{model}.{role}.{precision}.onnx"

