"""Whisper in CTranslate2's CPU int8 arithmetic: the recogniser's transcripts, from our own model.

The runtime's recogniser runs ``WhisperModel(path, device="cpu", compute_type="int8")``:
CTranslate2 4.x quantizes the model at load and runs its projections in integers. Our float
forms (hbaf/whisper.py) give other transcripts for about a third of the turns; this module
gives the PyTorch model the same arithmetic, so that it can stand in for CTranslate2 without
changing what the recogniser writes. What CTranslate2 (4.x, x86 wheels: built with oneDNN, and
with MKL used on Intel CPUs only) does, read from its sources (src/models/model.cc,
src/layers/common.cc, src/cpu/kernels.cc, src/ops/dequantize_cpu.cc):

- **At load**, every variable whose name ends in ``weight`` is quantized (``Model::ensure_dtype``):
  the float16 values become float32, each row gets ``scale = 127 / max|row|`` (float32) and
  ``q = round(w * scale)`` (round half to even, then a saturating cast). That covers every
  projection of the blocks and the token embeddings, which the decoder's output projection
  shares (``decoder/projection`` is an alias: the same int8 matrix and scales). The two
  convolutions of the encoder stem stay float32 (quantized convolutions are not built with
  oneDNN), and so do layer norms, biases and positions.
- **Each projection at run time** (``Dense``): every row of the input (one position) is quantized
  on its own, ``s = 127 / max|x|`` (1 for a zero row). With a u8 x s8 GEMM (oneDNN or MKL, the
  x86 case) it is shifted into u8: ``u = round(x * s + 128)`` in float32, and a compensation
  term ``-128 * sum(w)`` computed at load cancels the shift, so the int32 product is exactly
  ``(u - 128) . q``. (ARM's Ruy GEMM has no shift: ``round(x * s)``; ``u8_shift=False``.)
  Dequantization, per element, in float32: ``float(c) * (1 / s)``, then ``/ scale`` of the
  weight row, then ``+ bias``, then the fused activation (GELU, erf form); the residual is
  added after.
- **The embedding lookup** gathers the int8 rows and multiplies by ``1 / scale`` (float32).
- **Float32 throughout the rest**: layer norms, softmax, attention's Q.K (scaled by
  1/sqrt(64) = 0.125, exact) and A.V products, the convolutions, and GELU, whose erf is a
  polynomial approximation (``ct2_gelu`` computes it as CTranslate2 does: it halves the decoder's
  rounding flips against it).

Here the integer product is computed exactly in floating point: int8 x int8 sums of K terms
stay below 127 * 127 * K, exact in float32 for K <= 1040; the MLP's output projection (K = 1536)
adds float32 products of at most 1040 terms in float64. What is not copied is the summation
order of CTranslate2's float32 convolution, GEMMs and layer norms (oneDNN's, fast-math loops), a
few ulps away from PyTorch's: after one encoder block about 96 %
of the positions equal CTranslate2's to float32 noise, and the rest carry an int8 value rounded
the other way, which the later blocks spread. The decoder's logits agree to about 1e-5 until such
a flip. studies/ct2_int8_parity.py measures states and transcripts.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

EXACT_F32_DEPTH = (2**24) // (127 * 127)  # 1040: int8 dot products this long are exact in float32


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CTranslate2's int8 quantization of a weight matrix [rows, depth], per row:
    (q as float32 integers in [-127, 127], scale [rows] with w ~ q / scale)."""
    w = w.detach().float()
    amax = w.abs().amax(dim=-1)
    scale = torch.where(amax != 0, torch.tensor(127.0) / amax, torch.ones_like(amax))
    return torch.round(w * scale[:, None]).clamp(-127, 127), scale


class Int8Linear(nn.Module):
    """A projection as CTranslate2's int8 ``Dense`` computes it on a CPU (module notes)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, u8_shift: bool = True) -> None:
        super().__init__()
        q, scale = quantize_rows(weight)
        self.out_features, self.in_features = q.shape
        self.register_buffer("qweight_t", q.t().contiguous())  # [in, out], the int8 values in float32
        # the product in float32 pieces of at most EXACT_F32_DEPTH terms, each exact, summed in float64
        self.pieces = [(a, min(a + EXACT_F32_DEPTH, self.in_features)) for a in range(0, self.in_features, EXACT_F32_DEPTH)]
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.u8_shift = u8_shift

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row of ``x`` [..., depth] as int8 values (float32 integers) and its scale [..., 1]."""
        amax = x.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax != 0, 127.0 / amax, torch.ones_like(amax))
        if self.u8_shift:  # x * s + 128 rounded in float32, as the u8 GEMM input is made
            return torch.round(x * scale + 128.0) - 128.0, scale
        return torch.round(x * scale), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        q, s = self.quantize_input(x)
        if len(self.pieces) == 1:
            c = q @ self.qweight_t  # the exact int32 product
        else:  # exact in float64, then int32 -> float32 as CTranslate2 converts it
            c = sum((q[..., a:b] @ self.qweight_t[a:b]).double() for a, b in self.pieces).float()
        y = c * (1.0 / s) / self.scale
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, u8_shift={self.u8_shift}"


def _fma(a: torch.Tensor, b: torch.Tensor | float, c: torch.Tensor | float) -> torch.Tensor:
    """a * b + c rounded to float32 as an FMA instruction does (the product is exact in float64; the
    sum, rounded to float64 first, differs from one rounding only in rare ties)."""
    return (a.double() * b + c).float()


def _f32(v: float) -> float:
    """The float32 value of a C++ float literal."""
    return float(torch.tensor(v, dtype=torch.float32))


_EXP_P = [_f32(p) for p in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)]
_ERF_P = [_f32(p) for p in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]


def ct2_exp(x: torch.Tensor) -> torch.Tensor:
    """CTranslate2's vectorised exp on x86 (Cephes' polynomial, exp256_ps), float32."""
    x = x.clamp(-88.3762626647949, 88.3762626647949)
    fx = _fma(x, _f32(1.44269504088896341), 0.5)
    n = torch.floor(fx)
    x = _fma(-n, _f32(0.693359375), x)
    x = _fma(-n, _f32(-2.12194440e-4), x)
    y = torch.full_like(x, _EXP_P[0])
    for p in _EXP_P[1:]:
        y = _fma(y, x, p)
    y = _fma(y, x * x, x) + 1.0
    return y * torch.exp2(n)


def ct2_gelu(x: torch.Tensor) -> torch.Tensor:
    """CTranslate2's GELU on a CPU: 0.5 x (1 + erf(x / sqrt 2)) with erf by Abramowitz and Stegun
    7.1.26 (|error| < 1.5e-7, its vec_erf) over ``ct2_exp``; torch's erf is exact to an ulp, and
    the difference moves an activation across an int8 rounding boundary now and then."""
    x = x.float()
    u = x * _f32(0.7071067811865475)
    a = u.abs()
    t = 1.0 / _fma(a, _f32(0.3275911), 1.0)
    r = torch.full_like(t, _ERF_P[0])
    for p in _ERF_P[1:]:
        r = _fma(r, t, p)
    erf = _fma(-ct2_exp(-(u * u)) * t, r, 1.0)
    erf = torch.where(u < 0, -erf, erf)
    return 0.5 * (x * (1.0 + erf))


class CT2GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ct2_gelu(x)


def _swap(module: nn.Module, u8_shift: bool) -> None:
    """Every Linear of ``module`` becomes an ``Int8Linear``, every GELU CTranslate2's."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child.weight, child.bias, u8_shift=u8_shift))
        elif isinstance(child, nn.GELU):
            setattr(module, name, CT2GELU())
        else:
            _swap(child, u8_shift)


def to_ct2_int8(model: nn.Module, *, u8_shift: bool = True) -> nn.Module:
    """A copy of a float32 ``hbaf.whisper.Whisper`` (CPU) that computes as CTranslate2's CPU int8
    does: int8 projections in every block, the int8 token table for the embedding lookup (its
    dequantized rows) and for the output projection; the convolution stem stays float32.
    Its GELUs are CTranslate2's approximation (``ct2_gelu``). ``u8_shift``: the x86 GEMM's u8
    input (False: ARM's s8 x s8)."""
    model = copy.deepcopy(model).float().cpu()
    model.encoder.gelu = CT2GELU()
    for part in (model.encoder.blocks, model.decoder.blocks):
        _swap(part, u8_shift)
    dec = model.decoder
    table = dec.token_table.detach()  # [width, vocab]: one column per token
    output = Int8Linear(table.t(), None, u8_shift=u8_shift)
    with torch.no_grad():
        rows = output.qweight_t.float() * (1.0 / output.scale)  # the lookup's dequantized rows, [width, vocab]
        dec.token_table.copy_(rows)
    dec.output = output
    return model.eval()
