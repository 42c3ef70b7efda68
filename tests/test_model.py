from dataclasses import fields

import numpy as np
import pytest
import torch

from hbaf.losses import LossConfig, distillation_loss, hbaf_loss, info_nce, relative_structure
from hbaf.model import HBAF, HBAFConfig, count_parameters, preset
from hbaf.train import TrainConfig
from hbaf.text import Tokenizer, load_encoder_weights, resolve_text_encoder

LABELS = ["anger", "joy", "neutral", "sadness"]


@pytest.fixture(scope="module")
def encoder():
    path = resolve_text_encoder()
    return path, Tokenizer(path), load_encoder_weights(path)


def make(encoder, name="tiny", **kw):
    torch.manual_seed(0)
    m = HBAF(preset(name, dropout=0.0, **kw), LABELS)
    m.init_text_from_pretrained(encoder[2])
    return m.eval()


def inputs(tok, b=2, t=100, texts=None, k=4, d=64):
    torch.manual_seed(1)
    ids, mask = tok(texts or ["I am so happy today!", "leave me alone"][:b])
    return (torch.randn(b, t, 384), torch.ones(b, t), torch.from_numpy(ids), torch.from_numpy(mask),
            torch.zeros(b, k, d), torch.zeros(b, k))


def test_text_encoder_matches_pretrained_bert(encoder):
    from transformers import AutoModel

    path, tok, _ = encoder
    m = make(encoder, "teacher")
    hf = AutoModel.from_pretrained(str(path)).eval()
    ids, mask = tok(["Hello there, how are you doing?", "ok"])
    with torch.no_grad():
        ours = m.text(torch.from_numpy(ids), torch.from_numpy(mask))
        ref = hf(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).last_hidden_state
    valid = torch.from_numpy(mask).bool()
    assert (ours - ref)[valid].abs().max() < 1e-4


def test_output_contract(encoder):
    m = make(encoder)
    with torch.no_grad():
        probs, emb, gate, audio_probs, text_probs = m(*inputs(encoder[1]))
    assert m.output_names == ("probs", "utt_emb", "gate", "audio_probs", "text_probs")
    assert probs.shape == (2, 4) and emb.shape == (2, 64) and gate.shape == (2, 2)
    assert audio_probs.shape == text_probs.shape == (2, 4)  # the uni-modal heads: what the voice / the words say
    assert torch.allclose(audio_probs.sum(1), torch.ones(2), atol=1e-5) and torch.allclose(text_probs.sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
    assert ((gate > 0) & (gate < 1)).all()


def test_padding_does_not_change_the_result(encoder):
    m = make(encoder)
    feats, fmask, ids, imask, mem, mm = inputs(encoder[1], b=1, texts=["what a day"])
    with torch.no_grad():
        ref = m(feats, fmask, ids, imask, mem, mm)[0]
        pf = torch.cat([feats, torch.randn(1, 37, 384)], 1)
        pm = torch.cat([fmask, torch.zeros(1, 37)], 1)
        pids = torch.cat([ids, torch.full((1, 5), 7, dtype=ids.dtype)], 1)
        pim = torch.cat([imask, torch.zeros(1, 5, dtype=imask.dtype)], 1)
        out = m(pf, pm, pids, pim, mem, mm)[0]
    assert (out - ref).abs().max() < 1e-5


def test_memory_is_used_and_masked(encoder):
    m = make(encoder)
    feats, fmask, ids, imask, mem, mm = inputs(encoder[1], b=1, texts=["fine"])
    with torch.no_grad():
        empty = m(feats, fmask, ids, imask, mem, mm)[0]
        junk = m(feats, fmask, ids, imask, torch.randn_like(mem) * 5, mm)[0]  # masked out: no effect
        used = m(feats, fmask, ids, imask, torch.randn_like(mem) * 5, torch.ones_like(mm))[0]
    assert (junk - empty).abs().max() < 1e-5
    assert (used - empty).abs().max() > 1e-4


def test_single_modality_and_no_gate_variants(encoder):
    for kw in ({"modalities": "audio"}, {"modalities": "text"}, {"use_gate": False}):
        m = make(encoder, **kw)
        with torch.no_grad():
            probs, _, gate, *heads = m(*inputs(encoder[1]))
        assert probs.shape == (2, 4)
        assert len(heads) == (1 if "modalities" in kw else 2)  # a single-modality model has its one head
        if kw.get("use_gate") is False:
            assert torch.allclose(gate, torch.ones_like(gate))
    assert count_parameters(make(encoder, modalities="audio")) < count_parameters(make(encoder))


def test_student_is_a_third_of_teacher_compute(encoder):
    from torch.utils.flop_counter import FlopCounterMode

    def flops(name):
        m = HBAF(preset(name), LABELS).eval()
        c = m.cfg
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.randn(1, 150, 384), torch.ones(1, 150),  # 3 s of encoder states
              torch.ones(1, 24, dtype=torch.int32),
              torch.ones(1, 24, dtype=torch.int32), torch.zeros(1, c.context_size, c.d_model), torch.zeros(1, c.context_size))
        return fc.get_total_flops()

    assert flops("student") <= flops("teacher") / 3


def test_losses_behave():
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    assert info_nce(a, a, 0.1) < info_nce(a, torch.randn(8, 16), 0.1)
    assert relative_structure(a, a, 0.1).abs() < 1e-5
    assert relative_structure(a, torch.randn(8, 16), 0.1) > 0.01
    logits = torch.randn(4, 3)
    assert distillation_loss(logits, logits, 2.0).abs() < 1e-5
    lc = LossConfig()
    target = torch.tensor([0, 1, 2, 0])
    out = {"logits": logits, "audio_logits": logits, "text_logits": logits, "con_a": torch.randn(4, 8), "con_t": torch.randn(4, 8)}
    total, parts = hbaf_loss(out, target, lc)
    assert set(parts) == {"ce", "ce_audio", "ce_text", "abs", "rel"}
    assert abs(float(total) - sum(parts.values())) < 1e-4
    np.testing.assert_allclose(parts["ce_audio"], lc.w_audio * parts["ce"], rtol=1e-5)
    _, parts = hbaf_loss(out, target, LossConfig(w_abs=0.0, w_rel=0.0))
    assert set(parts) == {"ce", "ce_audio", "ce_text"}
    single = {k: v for k, v in out.items() if k != "text_logits"}  # an audio-only model has no text head
    _, parts = hbaf_loss(single, target, lc)
    assert set(parts) == {"ce"}


def test_model_config_holds_sizes_only():
    """The loss weights and augmentation belong to training; old checkpoint configs that still carry
    them load (the unknown keys are ignored)."""
    training_knobs = {f.name for f in fields(LossConfig)} | {"modality_dropout"}
    assert not training_knobs & {f.name for f in fields(HBAFConfig)}
    assert isinstance(TrainConfig().loss, LossConfig) and "modality_dropout" in {f.name for f in fields(TrainConfig)}
    old = {**preset("student").to_dict(), "w_audio": 0.3, "w_abs": 0.0, "modality_dropout": 0.15, "label_smoothing": 0.05}
    assert HBAFConfig.from_dict(old) == preset("student")


def test_state_dict_names_are_stable():
    """Checkpoints and the export map weights by these names: the context attention of each modality
    is a LayerNorm + attention, nothing sized by K."""
    m = HBAF(preset("tiny"), LABELS)
    names = {k for k in m.state_dict() if k.startswith(("a_ctx.", "t_ctx."))}
    per_side = {"ln.weight", "ln.bias"} | {f"attn.{p}.{w}" for p in ("query", "key", "value", "out") for w in ("weight", "bias")}
    assert names == {f"{side}.{n}" for side in ("a_ctx", "t_ctx") for n in per_side}
