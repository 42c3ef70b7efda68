"""HBAF: Heterogeneous Bimodal Attention Fusion (our reading of arXiv 2503.06405).

One file, top to bottom:

    HBAFConfig            the one source of sizes (+ teacher/student presets); the loss
                          weights live with training (hbaf.losses.LossConfig)
    MultiHeadAttention    plain attention with an additive mask (exports cleanly to ONNX/TensorRT)
    BertLayer/TextEncoder all-MiniLM-L6-v2 re-implemented so its weights load 1:1 and the
                          graph stays free of framework-specific mask tricks
    AudioEncoder          Whisper encoder states (or log-mel) -> strided conv -> pre-LN transformer
    ContextAttention      a pooled utterance vector attends over the dialogue memory
    GatedCross            dynamic gate: h = h_self + sigmoid(W[h_self; h_cross]) * h_cross
    HBAF                  encode() (heavy, memory-free) + fuse() (light, uses the memory)

Where the paper is silent we chose, and the comments say so:
- Level 1 (frame/token): every audio frame attends over the text tokens and every
  token over the frames, each direction with its own per-dimension gate.
- Level 2 (utterance): the context-enhanced audio utterance vector attends over the
  level-1 text tokens and vice versa, gated again; the two gated streams are
  concatenated into the fused utterance embedding (pushed to the dialogue memory).
- Context: a learned "null" slot is always attendable, so an empty memory
  (first utterance of a dialogue) is well defined, and a learned recency
  embedding tells the attention how far back each memory slot is.
- The reported gate is the mean level-2 gate of each direction:
  gate[:, 0] = how much text flowed into the audio stream,
  gate[:, 1] = how much audio flowed into the text stream.
- The audio-alone and text-alone heads (trained as auxiliary losses) are contract outputs too,
  ``audio_probs`` and ``text_probs``: what the voice says and what the words say, each on its
  own, next to the fused ``probs``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from hbaf.contract import DEFAULT_TEXT_ENCODER, FEATURE_KIND, LEGACY_FEATURE_KIND, MAX_TOKENS, feature_format, outputs_for

NEG_INF = -1.0e4  # additive mask value; finite so FP16/INT8 ranges stay sane


@dataclass
class HBAFConfig:
    """What shapes the network: sizes, the ablation switches and dropout. How it is trained (loss
    weights, modality dropout, optimiser) is ``hbaf.train.TrainConfig``."""

    # audio branch: its input format (hbaf.contract.FEATURE_FORMATS) fixes the width F
    feature_kind: str = FEATURE_KIND
    d_model: int = 256
    audio_layers: int = 4
    audio_heads: int = 4
    audio_ff: int = 1024
    # text branch (a BERT-style pretrained encoder; the first `text_layers` layers are kept)
    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_layers: int = 6
    text_dim: int = 384
    text_heads: int = 12
    text_ff: int = 1536
    vocab_size: int = 30522
    max_positions: int = 512
    max_tokens: int = MAX_TOKENS
    # fusion
    fusion_heads: int = 4
    context_size: int = 8
    use_gate: bool = True
    modalities: str = "both"  # "both" | "audio" | "text" (single-modality ablations)
    dropout: float = 0.1  # of every module's nn.Dropout (inactive in eval mode and in exported graphs)

    def __post_init__(self) -> None:
        feature_format(self.feature_kind)  # a one-line error for an unknown kind

    @property
    def feature_dim(self) -> int:
        return feature_format(self.feature_kind).dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HBAFConfig":
        """The config saved with a checkpoint. Unknown keys are ignored, so checkpoints written
        when the loss weights still lived here (w_audio, w_abs, label_smoothing, ...) load; one
        that names no feature kind took release 1's log-mel."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("feature_kind", LEGACY_FEATURE_KIND)
        return cls(**values)


PRESETS: dict[str, HBAFConfig] = {
    "teacher": HBAFConfig(),
    # ~1/3 of the teacher's compute: 2 of MiniLM's 6 layers, a narrower 2-layer audio encoder.
    "student": HBAFConfig(d_model=160, audio_layers=2, audio_heads=4, audio_ff=640, text_layers=2, fusion_heads=4),
    # for tests: runs in seconds
    "tiny": HBAFConfig(d_model=64, audio_layers=1, audio_heads=2, audio_ff=128, text_layers=1, fusion_heads=2, context_size=4),
}


def preset(name: str, **overrides) -> HBAFConfig:
    from hbaf.errors import HBAFError

    if name not in PRESETS:
        raise HBAFError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] 1/0 mask -> [B, 1, 1, S] additive mask (0 keep, NEG_INF drop)."""
    return ((1.0 - mask.to(torch.float32)) * NEG_INF)[:, None, None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of [B, S, D] where mask [B, S] is 1; an all-zero row gives zeros."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_q: int, n_heads: int, d_kv: int | None = None, dropout: float = 0.0):
        super().__init__()
        d_kv = d_kv or d_q
        self.n_heads = n_heads
        self.head_dim = d_q // n_heads
        self.query = nn.Linear(d_q, d_q)
        self.key = nn.Linear(d_kv, d_q)
        self.value = nn.Linear(d_kv, d_q)
        self.out = nn.Linear(d_q, d_q)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask_add: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        s = kv.shape[1]
        q = self.query(x).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.key(kv).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.value(kv).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        # the masks are float32 (contract inputs); a float16 model must add them in its own precision
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + mask_add.to(q.dtype)
        attn = self.dropout(torch.softmax(scores, dim=-1))
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim)
        return self.out(y)


# ----------------------------------------------------------------------------- text


class BertLayer(nn.Module):
    """Post-LN BERT layer with the parameter names of the pretrained checkpoint (remapped on load)."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadAttention(d, heads, dropout=dropout)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff_in = nn.Linear(d, ff)
        self.ff_out = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask_add: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.dropout(self.attn(x, x, mask_add)))
        return self.ln2(x + self.dropout(self.ff_out(F.gelu(self.ff_in(x)))))


class TextEncoder(nn.Module):
    def __init__(self, cfg: HBAFConfig):
        super().__init__()
        d = cfg.text_dim
        self.word = nn.Embedding(cfg.vocab_size, d)
        self.position = nn.Embedding(cfg.max_positions, d)
        self.token_type = nn.Parameter(torch.zeros(d))  # segment 0 of the pretrained table
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(d, cfg.text_heads, cfg.text_ff, cfg.dropout) for _ in range(cfg.text_layers))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:length][None] + self.token_type
        x = self.dropout(self.ln(x))
        mask_add = additive_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask_add)
        return x

    def load_pretrained(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy a HuggingFace BERT state dict (all-MiniLM-L6-v2) into this module."""
        w = {k.removeprefix("bert."): v for k, v in weights.items()}
        own = {
            "word.weight": w["embeddings.word_embeddings.weight"],
            "position.weight": w["embeddings.position_embeddings.weight"],
            "token_type": w["embeddings.token_type_embeddings.weight"][0],
            "ln.weight": w["embeddings.LayerNorm.weight"],
            "ln.bias": w["embeddings.LayerNorm.bias"],
        }
        names = {
            "attn.query": "attention.self.query", "attn.key": "attention.self.key",
            "attn.value": "attention.self.value", "attn.out": "attention.output.dense",
            "ln1": "attention.output.LayerNorm", "ff_in": "intermediate.dense",
            "ff_out": "output.dense", "ln2": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for mine, theirs in names.items():
                for p in ("weight", "bias"):
                    own[f"layers.{i}.{mine}.{p}"] = w[f"encoder.layer.{i}.{theirs}.{p}"]
        self.load_state_dict(own, strict=True)


# ----------------------------------------------------------------------------- audio


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask_add: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.dropout(self.attn(h, h, mask_add))
        return x + self.dropout(self.ff(self.ln2(x)))


def sinusoids(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    inv = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe


class AudioEncoder(nn.Module):
    """Input frames -> strided convs down to 25 frames/s -> pre-LN transformer.

    log-mel (100 frames/s): two stride-2 convs. Whisper encoder states (50 frames/s, already a
    deep real-speech representation): one stride-2 conv. An inner encoder layer (the residual
    stream after a block, ``whisper-tiny.en:block2``) is not layer-normalised like the final
    states, and a few of its dimensions are much larger than the rest: a LayerNorm over each
    frame (``in_norm``) comes first.
    """

    def __init__(self, cfg: HBAFConfig):
        super().__init__()
        d = cfg.d_model
        fmt = feature_format(cfg.feature_kind)
        self.in_norm = nn.LayerNorm(fmt.dim) if fmt.layer is not None else None
        self.conv1 = nn.Conv1d(fmt.dim, d, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1) if fmt.subsample == 4 else None
        self.register_buffer("pos", sinusoids(fmt.max_frames // fmt.subsample + 8, d), persistent=False)
        self.blocks = nn.ModuleList(Block(d, cfg.audio_heads, cfg.audio_ff, cfg.dropout) for _ in range(cfg.audio_layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, F], mask [B, T] -> frames [B, ceil(T/s), d], mask [B, ceil(T/s)] (s = 4 or 2)."""
        m = mask.to(feats.dtype)
        if self.in_norm is not None:
            feats = self.in_norm(feats)
        x = F.gelu(self.conv1((feats * m[..., None]).transpose(1, 2)))
        m = m[:, ::2]
        if self.conv2 is not None:
            x = F.gelu(self.conv2(x * m[:, None, :]))
            m = m[:, ::2]
        x = x.transpose(1, 2)
        x = x + self.pos[: x.shape[1]][None]
        mask_add = additive_mask(m)
        for block in self.blocks:
            x = block(x, mask_add)
        return self.ln(x), m


# ----------------------------------------------------------------------------- fusion


class GatedCross(nn.Module):
    """Cross-modal attention with the dynamic gate: out = h + g * cross, g = sigmoid(W [h; cross])."""

    def __init__(self, d: int, heads: int, dropout: float, use_gate: bool):
        super().__init__()
        self.ln_q = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, heads, dropout=dropout)
        self.gate = nn.Linear(2 * d, d) if use_gate else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, other: torch.Tensor, other_mask_add: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cross = self.dropout(self.attn(self.ln_q(h), self.ln_kv(other), other_mask_add))
        if self.gate is None:
            g = torch.ones_like(cross)
        else:
            g = torch.sigmoid(self.gate(torch.cat([h, cross], dim=-1)))
        return h + g * cross, g


class ContextAttention(nn.Module):
    """Pooled utterance vector [B, d] attends over [null; memory] [B, 1+K, d]; residual add."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, heads, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, v: torch.Tensor, memory_kv: torch.Tensor, memory_mask_add: torch.Tensor) -> torch.Tensor:
        return v + self.dropout(self.attn(self.ln(v)[:, None], memory_kv, memory_mask_add)[:, 0])


@dataclass
class Encoded:
    """Memory-independent part of a forward pass (computed once per utterance)."""

    a_seq: torch.Tensor  # [B, Ta, d] audio frames after level-1 fusion
    a_mask: torch.Tensor  # [B, Ta]
    t_seq: torch.Tensor  # [B, L, d] text tokens after level-1 fusion
    t_mask: torch.Tensor  # [B, L]
    a_vec: torch.Tensor  # [B, d] pooled uni-modal audio (before fusion)
    t_vec: torch.Tensor  # [B, d] pooled uni-modal text (before fusion)

    def select(self, idx: torch.Tensor) -> "Encoded":
        return Encoded(*(getattr(self, f.name).index_select(0, idx) for f in fields(self)))


class HBAF(nn.Module):
    def __init__(self, cfg: HBAFConfig, labels: list[str]):
        super().__init__()
        self.cfg = cfg
        self.labels = list(labels)
        d = cfg.d_model
        self.use_audio = cfg.modalities in ("both", "audio")
        self.use_text = cfg.modalities in ("both", "text")
        if self.use_audio:
            self.audio = AudioEncoder(cfg)
            self.a_ctx = ContextAttention(d, cfg.fusion_heads, cfg.dropout)
            self.audio_head = nn.Linear(d, len(labels))
        if self.use_text:
            self.text = TextEncoder(cfg)
            self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.LayerNorm(d))
            self.t_ctx = ContextAttention(d, cfg.fusion_heads, cfg.dropout)
            self.text_head = nn.Linear(d, len(labels))
        if cfg.modalities == "both":
            # level 1: frame <-> token
            self.l1_a = GatedCross(d, cfg.fusion_heads, cfg.dropout, cfg.use_gate)
            self.l1_t = GatedCross(d, cfg.fusion_heads, cfg.dropout, cfg.use_gate)
            # level 2: utterance vector <-> the other modality's level-1 sequence
            self.l2_a = GatedCross(d, cfg.fusion_heads, cfg.dropout, cfg.use_gate)
            self.l2_t = GatedCross(d, cfg.fusion_heads, cfg.dropout, cfg.use_gate)
        n_streams = 2 if cfg.modalities == "both" else 1
        self.memory_null = nn.Parameter(torch.randn(d) * 0.02)
        self.memory_recency = nn.Parameter(torch.randn(cfg.context_size, d) * 0.02)
        self.fuse_proj = nn.Sequential(nn.Linear(n_streams * d, d), nn.GELU(), nn.LayerNorm(d))
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(d, len(labels))
        # contrastive projections (training only; not in the exported graph)
        self.con_a = nn.Linear(d, d)
        self.con_t = nn.Linear(d, d)

    @property
    def memory_dim(self) -> int:
        return self.cfg.d_model

    def init_text_from_pretrained(self, weights: dict[str, torch.Tensor]) -> None:
        if self.use_text:
            self.text.load_pretrained(weights)

    # -- heavy part: encoders + level-1 fusion (no dialogue memory involved)
    def encode(self, audio_feats, audio_mask, input_ids, attention_mask) -> Encoded:
        b = audio_feats.shape[0] if self.use_audio else input_ids.shape[0]
        d = self.cfg.d_model
        empty = audio_feats.new_zeros((b, 1, d)) if self.use_audio else input_ids.new_zeros((b, 1, d), dtype=torch.float32)
        none_mask = empty[..., 0]
        a_seq, a_mask, t_seq, t_mask = empty, none_mask, empty, none_mask
        if self.use_audio:
            a_seq, a_mask = self.audio(audio_feats, audio_mask)
        if self.use_text:
            t_mask = attention_mask.to(torch.float32)
            t_seq = self.text_proj(self.text(input_ids, attention_mask))
        a_vec, t_vec = masked_mean(a_seq, a_mask), masked_mean(t_seq, t_mask)
        if self.cfg.modalities == "both":
            a_seq, _ = self.l1_a(a_seq, t_seq, additive_mask(t_mask))
            t_seq, _ = self.l1_t(t_seq, a_seq, additive_mask(a_mask))
        return Encoded(a_seq, a_mask, t_seq, t_mask, a_vec, t_vec)

    # -- light part: dialogue context, level-2 fusion, heads
    def fuse(self, enc: Encoded, memory: torch.Tensor, memory_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        b = enc.a_vec.shape[0]
        mem = torch.cat([self.memory_null.expand(b, 1, -1), memory + self.memory_recency[None]], dim=1)
        mem_mask = torch.cat([memory_mask.new_ones((b, 1)), memory_mask], dim=1)
        mem_add = additive_mask(mem_mask)
        out: dict[str, torch.Tensor] = {}
        streams = []
        a_ctx = t_ctx = None
        if self.use_audio:
            a_ctx = self.a_ctx(enc.a_vec, mem, mem_add)
            out["audio_logits"] = self.audio_head(self.head_dropout(a_ctx))
            out["audio_probs"] = torch.softmax(out["audio_logits"], dim=-1)
        if self.use_text:
            t_ctx = self.t_ctx(enc.t_vec, mem, mem_add)
            out["text_logits"] = self.text_head(self.head_dropout(t_ctx))
            out["text_probs"] = torch.softmax(out["text_logits"], dim=-1)
        if self.cfg.modalities == "both":
            h_a, g_a = self.l2_a(a_ctx[:, None], enc.t_seq, additive_mask(enc.t_mask))
            h_t, g_t = self.l2_t(t_ctx[:, None], enc.a_seq, additive_mask(enc.a_mask))
            streams = [h_a[:, 0], h_t[:, 0]]
            gate = torch.stack([g_a.mean(dim=(1, 2)), g_t.mean(dim=(1, 2))], dim=1)
        else:
            streams = [a_ctx if a_ctx is not None else t_ctx]
            gate = streams[0].new_zeros((b, 2))  # no cross-modal flow in a single-modality model
        utt_emb = self.fuse_proj(torch.cat(streams, dim=-1))
        logits = self.head(self.head_dropout(utt_emb))
        out.update(logits=logits, probs=torch.softmax(logits, dim=-1), utt_emb=utt_emb, gate=gate)
        out["con_a"] = self.con_a(enc.a_vec)
        out["con_t"] = self.con_t(enc.t_vec)
        return out

    @property
    def output_names(self) -> tuple[str, ...]:
        """What ``forward`` returns, in order (``hbaf.contract.outputs_for``)."""
        return outputs_for(self.cfg.modalities)

    def forward(self, audio_feats, audio_mask, input_ids, attention_mask, memory, memory_mask):
        """The export contract: -> (probs [B, C], utt_emb [B, D], gate [B, 2], then the uni-modal
        heads this model has: audio_probs [B, C], text_probs [B, C]), named by ``output_names``."""
        out = self.fuse(self.encode(audio_feats, audio_mask, input_ids, attention_mask), memory, memory_mask)
        return tuple(out[name] for name in self.output_names)


def count_parameters(model: nn.Module, exclude_training_only: bool = True) -> int:
    skip = ("con_a.", "con_t.") if exclude_training_only else ()
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))
