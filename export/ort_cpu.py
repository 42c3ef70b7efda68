"""The ONNX Runtime CPU graph: the same weights and I/O contract, laid out for ONNX Runtime's CPU kernels.

The contract graph (export_onnx) holds standard opset-17 operators only, because TensorRT must
parse it. On a CPU at batch 1 the student is ~400 small nodes (every attention block is three
projections, reshapes, transposes, two MatMuls, scale, mask add and Softmax), and with two
intra-op threads each node costs a thread-pool round trip, so dispatch rather than arithmetic
limits the INT8 model. This graph, used for the CPU INT8 flavour, differs in layout only:

- every attention block is one ``com.microsoft.MultiHeadAttention`` node, with the Q/K/V
  projection biases and the key padding mask inside it (the mask value is the model's NEG_INF,
  so the arithmetic is the model's);
- the Q, K and V projections of a self-attention block are one packed GEMM followed by a
  Split (K and V of a cross-attention block likewise), so INT8 runs one larger GEMM instead of
  three small ones;
- ONNX Runtime's transformer fusions then fold GELU (with its bias), the residual adds into
  SkipLayerNormalization, and LayerNorm.

How: ``fused_copy(model)`` deep-copies the model and swaps every ``MultiHeadAttention`` for a
``FusedAttention`` holding the same Linear layers (so the parameter names stay the same) whose
forward is the packed projections + a PyTorch custom op; ``translation_table()`` tells the
exporter to emit that op as the contrib node. The original model and the class are untouched.

Only ONNX Runtime runs this graph (opset 18 plus the com.microsoft domain); its metadata says
``"graph": "ort-cpu"`` and the TensorRT path refuses it.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from export.graph_ops import fold_weight_packing
from hbaf.contract import MS_DOMAIN
from hbaf.model import NEG_INF, MultiHeadAttention

log = logging.getLogger(__name__)

_MHA_OP = "hbaf::mha"


def _register() -> None:
    """The PyTorch custom op (reference math, used while tracing) and an ONNX schema for the
    contrib node so onnxscript can build it (registered once per process)."""
    import onnx
    from onnx.defs import OpSchema

    if not hasattr(torch.ops.hbaf, "mha"):
        @torch.library.custom_op(_MHA_OP, mutates_args=(), schema="(Tensor q, Tensor k, Tensor v, Tensor bias, "
                                 "Tensor keep, int num_heads, float mask_value) -> Tensor")
        def mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor,
                num_heads: int, mask_value: float) -> torch.Tensor:
            b, n, d = q.shape
            s = k.shape[1]
            h = d // num_heads
            bq, bk, bv = bias.split(d)
            qh = (q + bq).view(b, n, num_heads, h).transpose(1, 2)
            kh = (k + bk).view(b, s, num_heads, h).transpose(1, 2)
            vh = (v + bv).view(b, s, num_heads, h).transpose(1, 2)
            scores = qh @ kh.transpose(-1, -2) * (1.0 / math.sqrt(h))
            scores = scores + (1.0 - keep.to(q.dtype))[:, None, None, :] * mask_value
            return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, d)

        @mha.register_fake
        def _(q, k, v, bias, keep, num_heads, mask_value):
            return torch.empty_like(q)

    try:
        onnx.defs.get_schema("MultiHeadAttention", 1, MS_DOMAIN)
    except Exception:  # not registered yet in this process
        fp = OpSchema.FormalParameter
        onnx.defs.register_schema(OpSchema(
            "MultiHeadAttention", MS_DOMAIN, 1,
            inputs=[fp("query", "T"), fp("key", "T"), fp("value", "T"), fp("bias", "T"), fp("key_padding_mask", "M")],
            outputs=[fp("output", "T")],
            type_constraints=[("T", ["tensor(float)"], "float"), ("M", ["tensor(int32)"], "1 keep, 0 pad")],
            attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                        OpSchema.Attribute("mask_filter_value", OpSchema.AttrType.FLOAT, "added to padded keys")],
        ))


def translation_table() -> dict:
    """torch custom op -> the contrib node, for torch.onnx.export(custom_translation_table=...)."""
    import onnxscript

    _register()
    ms = onnxscript.values.Opset(MS_DOMAIN, 1)

    def mha_onnx(q, k, v, bias, keep, num_heads: int, mask_value: float):
        return ms.MultiHeadAttention(q, k, v, bias, keep, num_heads=num_heads, mask_filter_value=mask_value)

    return {torch.ops.hbaf.mha.default: mha_onnx}


class FusedAttention(nn.Module):
    """An ``hbaf.model.MultiHeadAttention``'s layers with this graph's forward: the same arithmetic,
    with packed projections and the attention itself as one custom op (one contrib node)."""

    def __init__(self, attn: MultiHeadAttention) -> None:
        super().__init__()
        self.n_heads = attn.n_heads
        self.query, self.key, self.value, self.out = attn.query, attn.key, attn.value, attn.out

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask_add: torch.Tensor) -> torch.Tensor:
        d = self.query.weight.shape[0]
        keep = (mask_add[:, 0, 0, :] > 0.5 * NEG_INF).to(torch.int32)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        if x is kv:  # self-attention: one GEMM for Q, K and V
            w = torch.cat([self.query.weight, self.key.weight, self.value.weight])
            q, k, v = F.linear(x, w).split(d, dim=-1)
        else:  # cross-attention: Q from x, one GEMM for K and V
            q = F.linear(x, self.query.weight)
            k, v = F.linear(kv, torch.cat([self.key.weight, self.value.weight])).split(d, dim=-1)
        y = torch.ops.hbaf.mha(q, k, v, bias, keep, self.n_heads, NEG_INF)
        return self.out(y)


def fused_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose attention blocks are ``FusedAttention`` (``model`` is untouched)."""
    _register()
    fused = copy.deepcopy(model).eval()
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MultiHeadAttention):
                setattr(parent, name, FusedAttention(child))
    return fused


def fuse_transformer_ops(proto):
    """ONNX Runtime's transformer fusions (GELU, bias GELU, skip/plain LayerNorm) on the exported
    graph; attention is already fused and embedding fusion does not apply (three embeddings)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model_bert import BertOnnxModel

    fold_weight_packing(proto)
    opts = FusionOptions("bert")
    opts.enable_attention = False
    opts.enable_embed_layer_norm = False
    opts.enable_bias_skip_layer_norm = True
    model = BertOnnxModel(proto, 0, 0)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    model.optimize(opts, add_dynamic_axes=False)
    model.topological_sort()
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    log.info("ONNX Runtime CPU graph: %s", ", ".join(f"{v} {k}" for k, v in stats.items()))
    return model.model
