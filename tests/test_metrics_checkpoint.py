import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error

from hbaf.checkpoint import load_checkpoint, save_checkpoint
from hbaf.contract import TOKENIZER_FILE
from hbaf.errors import HBAFError
from hbaf.metrics import classification_report, majority_baseline
from hbaf.model import HBAF, preset
from hbaf.text import resolve_text_encoder


def test_weighted_f1_by_hand():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 1, 0]
    r = classification_report(y, p, ["a", "b", "c"])
    f1_a = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_b = 2 * (2 / 3) * 1 / (5 / 3)
    assert r["per_class_f1"]["a"] == pytest.approx(f1_a)
    assert r["weighted_f1"] == pytest.approx((3 * f1_a + 2 * f1_b) / 6)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["unweighted_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert np.array(r["confusion_matrix"]).sum() == 6
    maj = majority_baseline([0, 0, 1], [0, 1, 1], ["a", "b"])
    assert maj["accuracy"] == pytest.approx(1 / 3)


@pytest.fixture()
def ckpt(tmp_path):
    m = HBAF(preset("tiny"), ["x", "y"])
    return save_checkpoint(m, tmp_path / "ck", resolve_text_encoder() / TOKENIZER_FILE), m


def test_roundtrip(ckpt):
    path, m = ckpt
    m2, meta = load_checkpoint(path)
    assert meta["labels"] == ["x", "y"]
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_checkpoint_with_the_old_loss_keys_loads(ckpt):
    """Checkpoints written while HBAFConfig still held the loss weights load unchanged."""
    path, m = ckpt
    meta = json.loads((path / "config.json").read_text())
    meta["config"].update(w_audio=0.3, w_text=0.3, w_abs=0.1, w_rel=0.1, contrastive_temperature=0.1,
                          modality_dropout=0.15, label_smoothing=0.05)
    (path / "config.json").write_text(json.dumps(meta))
    m2, _ = load_checkpoint(path)
    assert m2.cfg == m.cfg
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())


def test_truncated_and_mismatched(ckpt):
    path, _ = ckpt
    w = path / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(HBAFError, match="truncated"):
        load_checkpoint(path)
    w.write_bytes(data)
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["d_model"] = 96
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HBAFError, match="do not match"):
        load_checkpoint(path)


def test_cli_truncated_checkpoint_is_one_line(ckpt, tmp_path):
    path, _ = ckpt
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    man = tmp_path / "m.jsonl"
    man.write_text("")
    proc = subprocess.run([sys.executable, "-m", "hbaf.cli", "evaluate", "--checkpoint", str(path), "--manifest", str(man)],
                          capture_output=True, text=True)
    assert_one_line_error(proc, "model.safetensors")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
