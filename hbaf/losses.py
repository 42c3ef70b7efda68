"""Training objective: CE on the fused/audio/text heads + inter-modal contrastive terms + distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hbaf.model import HBAFConfig


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


def hbaf_loss(out: dict[str, torch.Tensor], target: torch.Tensor, cfg: HBAFConfig,
              class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss = CE(fused) + w_audio CE(audio) + w_text CE(text) + w_abs L_abs + w_rel L_rel."""
    ce = lambda logits: F.cross_entropy(logits, target, weight=class_weights, label_smoothing=cfg.label_smoothing)  # noqa: E731
    parts = {"ce": ce(out["logits"])}
    if "audio_logits" in out and cfg.modalities == "both":
        parts["ce_audio"] = cfg.w_audio * ce(out["audio_logits"])
    if "text_logits" in out and cfg.modalities == "both":
        parts["ce_text"] = cfg.w_text * ce(out["text_logits"])
    if cfg.modalities == "both" and (cfg.w_abs > 0 or cfg.w_rel > 0):
        parts["abs"] = cfg.w_abs * info_nce(out["con_a"], out["con_t"], cfg.contrastive_temperature)
        parts["rel"] = cfg.w_rel * relative_structure(out["con_a"], out["con_t"], cfg.contrastive_temperature)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target KL at temperature T, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t
