"""Training objective: CE on the fused/audio/text heads + inter-modal contrastive terms + distillation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    """Weights of Loss = CE(fused) + w_audio CE(audio) + w_text CE(text) + w_abs L_abs + w_rel L_rel.

    Training knobs only: the model's shapes live in ``hbaf.model.HBAFConfig``."""

    w_audio: float = 0.3
    w_text: float = 0.3
    w_abs: float = 0.1
    w_rel: float = 0.1
    contrastive_temperature: float = 0.1
    label_smoothing: float = 0.05


def info_nce(a: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Absolute contrastive loss: paired audio/text utterance vectors are positives, the rest of the batch negatives."""
    if a.shape[0] < 2:
        return a.new_zeros(())
    a, t = F.normalize(a, dim=-1), F.normalize(t, dim=-1)
    logits = a @ t.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def relative_structure(a: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Relative contrastive loss: the audio-audio and text-text similarity structures of a batch agree.

    Symmetric KL between the row-softmaxed similarity matrices (self-similarity removed).
    """
    n = a.shape[0]
    if n < 3:
        return a.new_zeros(())
    a, t = F.normalize(a, dim=-1), F.normalize(t, dim=-1)
    eye = torch.eye(n, dtype=torch.bool, device=a.device)
    sa = (a @ a.T / temperature).masked_fill(eye, -1e4)
    st = (t @ t.T / temperature).masked_fill(eye, -1e4)
    la, lt = F.log_softmax(sa, dim=-1), F.log_softmax(st, dim=-1)
    kl_at = F.kl_div(la, lt, log_target=True, reduction="batchmean")
    kl_ta = F.kl_div(lt, la, log_target=True, reduction="batchmean")
    return 0.5 * (kl_at + kl_ta)


def hbaf_loss(out: dict[str, torch.Tensor], target: torch.Tensor, lc: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss = CE(fused) + w_audio CE(audio) + w_text CE(text) + w_abs L_abs + w_rel L_rel.

    ``out`` is ``HBAF.fuse``'s dict. The uni-modal and contrastive terms apply to a bimodal model
    only (its output has both ``audio_logits`` and ``text_logits``)."""
    ce = lambda logits: F.cross_entropy(logits, target, label_smoothing=lc.label_smoothing)  # noqa: E731
    parts = {"ce": ce(out["logits"])}
    if "audio_logits" in out and "text_logits" in out:
        parts["ce_audio"] = lc.w_audio * ce(out["audio_logits"])
        parts["ce_text"] = lc.w_text * ce(out["text_logits"])
        if lc.w_abs > 0 or lc.w_rel > 0:
            parts["abs"] = lc.w_abs * info_nce(out["con_a"], out["con_t"], lc.contrastive_temperature)
            parts["rel"] = lc.w_rel * relative_structure(out["con_a"], out["con_t"], lc.contrastive_temperature)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target KL at temperature T, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t
