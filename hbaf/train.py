"""Training, evaluation and distillation: a plain loop over dialogue batches.

A batch is a set of whole dialogues. The heavy, memory-free part of the model
(encoders + level-1 fusion) runs once over every utterance of the batch, in
length-sorted chunks to avoid padding waste; the light part (dialogue context,
level-2 fusion, heads) then steps through dialogue positions, feeding each
utterance the embeddings of the previous K utterances of its own dialogue,
exactly as the runtime's dialogue memory does.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from hbaf.checkpoint import save_checkpoint
from hbaf.contract import ModelSpec
from hbaf.data.records import Record
from hbaf.data.store import FeatureStore, SubStore, group_dialogues
from hbaf.errors import HBAFError
from hbaf.features import silence_features
from hbaf.io import write_json_atomic
from hbaf.losses import LossConfig, distillation_loss, hbaf_loss
from hbaf.metrics import classification_report, majority_baseline, plot_confusion
from hbaf.model import HBAF, Encoded
from hbaf.text import Tokenizer, asr_style

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- batching


def pack_batches(groups: list[list[int]], max_utts: int, rng: random.Random | None) -> list[list[list[int]]]:
    order = list(range(len(groups)))
    if rng is not None:
        rng.shuffle(order)
    batches, cur, n = [], [], 0
    for gi in order:
        g = groups[gi]
        if cur and n + len(g) > max_utts:
            batches.append(cur)
            cur, n = [], 0
        cur.append(g)
        n += len(g)
    if cur:
        batches.append(cur)
    return batches


@dataclass
class Inputs:
    feats: torch.Tensor  # [N, T, F]
    feat_mask: torch.Tensor  # [N, T]
    ids: torch.Tensor  # [N, L] int32
    id_mask: torch.Tensor  # [N, L] int32


def make_inputs(feats: list[np.ndarray], texts: list[str], tokenizer: Tokenizer) -> Inputs:
    t = max(1, max(f.shape[0] for f in feats))
    x = np.zeros((len(feats), t, feats[0].shape[1]), dtype=np.float32)  # padding is masked out
    m = np.zeros((len(feats), t), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f
        m[i, : f.shape[0]] = 1.0
    ids, id_mask = tokenizer(texts)
    return Inputs(torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(ids), torch.from_numpy(id_mask))


def _pad_cat(tensors: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    padded = [torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1]) if t.dim() == 3 else (0, width - t.shape[1]), value=value)
              for t in tensors]
    return torch.cat(padded, dim=0)


def encode_chunked(model: HBAF, feats: list[np.ndarray], texts: list[str], tokenizer: Tokenizer, chunk: int = 16):
    """model.encode over utterances in length-sorted chunks; results in the original order, re-padded."""
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
    parts = []
    for s in range(0, len(order), chunk):
        sel = order[s : s + chunk]
        inp = make_inputs([feats[i] for i in sel], [texts[i] for i in sel], tokenizer)
        parts.append(model.encode(inp.feats, inp.feat_mask, inp.ids, inp.id_mask))
    inv = torch.empty(len(order), dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(len(order))
    enc = Encoded(
        _pad_cat([p.a_seq for p in parts]), _pad_cat([p.a_mask for p in parts]),
        _pad_cat([p.t_seq for p in parts]), _pad_cat([p.t_mask for p in parts]),
        torch.cat([p.a_vec for p in parts]), torch.cat([p.t_vec for p in parts]),
    )
    return enc.select(inv)


def forward_dialogues(model: HBAF, dialogues: list[list[int]], feats: list[np.ndarray], texts: list[str],
                      tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
    """Run the model over whole dialogues with the dialogue memory; outputs follow the flattened order."""
    flat = [i for g in dialogues for i in g]
    local = {i: k for k, i in enumerate(flat)}
    enc = encode_chunked(model, [feats[local[i]] for i in flat], [texts[local[i]] for i in flat], tokenizer)
    k, d = model.cfg.context_size, model.memory_dim
    history: list[list[torch.Tensor]] = [[] for _ in dialogues]
    outs, rows = [], []
    for step in range(max(len(g) for g in dialogues)):
        active = [j for j, g in enumerate(dialogues) if len(g) > step]
        idx = [local[dialogues[j][step]] for j in active]
        memory_mask = enc.a_vec.new_zeros((len(active), k))
        rows_mem = []
        for r, j in enumerate(active):
            past = history[j][-k:]
            pad = enc.a_vec.new_zeros((k - len(past), d))
            rows_mem.append(torch.cat([pad, torch.stack(past)]) if past else pad)
            memory_mask[r, k - len(past):] = 1.0 if past else 0.0
        memory = torch.stack(rows_mem)
        out = model.fuse(enc.select(torch.tensor(idx)), memory, memory_mask)
        for r, j in enumerate(active):
            history[j].append(out["utt_emb"][r])
        outs.append(out)
        rows.extend(idx)
    inv = torch.empty(len(rows), dtype=torch.long)
    inv[torch.tensor(rows)] = torch.arange(len(rows))
    return {key: torch.cat([o[key] for o in outs])[inv] for key in outs[0]}


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: HBAF, records: list[Record], store: FeatureStore, tokenizer: Tokenizer,
            max_utts: int = 96, desc: str = "eval", blank_text: bool = False, blank_audio: bool = False) -> dict[str, np.ndarray]:
    """The contract's outputs (probs, utt_emb, gate) and the logits of every record, [N, ...] in
    ``records`` order, each dialogue run with its memory."""
    model.eval()
    groups = group_dialogues(records)
    pred = {name: np.zeros(shape, np.float32) for name, shape in ModelSpec.from_model(model).output_shapes(len(records)).items()}
    pred["logits"] = np.zeros_like(pred["probs"])
    for batch in tqdm(pack_batches(groups, max_utts, None), desc=desc, leave=False, unit="batch"):
        flat = [i for g in batch for i in g]
        feats = [_silence_like(store[i], model.cfg.feature_kind) if blank_audio else store[i] for i in flat]
        texts = ["" if blank_text else records[i].text for i in flat]
        out = forward_dialogues(model, _relabel(batch), feats, texts, tokenizer)
        for name, values in pred.items():
            values[flat] = out[name].numpy()
    return pred


def _relabel(batch: list[list[int]]) -> list[list[int]]:
    """Dialogues of global indices -> the same shape over 0..N-1 (flattened order)."""
    out, k = [], 0
    for g in batch:
        out.append(list(range(k, k + len(g))))
        k += len(g)
    return out


def _silence_like(f: np.ndarray, kind: str) -> np.ndarray:
    return silence_features(kind, f.shape[0])


def evaluate(model: HBAF, records: list[Record], store: FeatureStore, tokenizer: Tokenizer, **kw) -> tuple[dict, dict]:
    label_index = {lab: i for i, lab in enumerate(model.labels)}
    unknown = sorted({r.label for r in records} - set(label_index))
    if unknown:
        raise HBAFError(f"labels {unknown} are not in the model's label set {model.labels}; evaluate on data with the model's labels")
    pred = predict(model, records, store, tokenizer, **kw)
    y = [label_index[r.label] for r in records]
    report = classification_report(y, pred["probs"].argmax(1), model.labels)
    report["mean_gate"] = pred["gate"].mean(0).tolist()
    return report, pred


# ----------------------------------------------------------------------------- training


DEFAULT_EPOCHS = 8


@dataclass
class TrainConfig:
    """Every training knob (the model's sizes are ``HBAFConfig``'s); the `hbaf` command line takes
    its defaults from here."""

    epochs: int | None = None  # None: 8, or more on a small corpus (min_steps)
    min_steps: int = 300  # with epochs=None, a small corpus trains for more epochs until it gets this many steps
    max_auto_epochs: int = 80  # ... but never more epochs than this
    max_utts: int = 64  # utterances per batch (whole dialogues)
    lr: float = 5e-4
    text_lr: float = 5e-5  # pretrained text encoder
    weight_decay: float = 0.01
    warmup: float = 0.06
    patience: int = 3
    seed: int = 0
    max_steps: int | None = None  # cap on optimizer steps (quick runs)
    distill_temperature: float = 2.0
    distill_alpha: float = 0.7  # weight of the soft-target term (1 - alpha on the hard labels)
    hint_weight: float = 0.0  # hidden-state hint: MSE(proj(student utt_emb), teacher utt_emb)
    modality_dropout: float = 0.15  # share of utterances with blank text (as with failed ASR); half as many get blank audio
    loss: LossConfig = field(default_factory=LossConfig)
    asr_text: float = 0.0  # share of training transcripts replaced by their ASR form (see asr_transcripts)
    asr_transcripts: dict[str, str] | None = None  # audio path -> recogniser output; else hbaf.text.asr_style
    threads: int | None = None
    balance: bool = False  # draw training dialogues inversely to their labels' counts (hbaf adapt), not uniformly
    frozen: tuple[str, ...] = ()  # parameter-name prefixes left as they are (hbaf adapt: the text branch)


def _param_groups(model: HBAF, tc: TrainConfig) -> list[dict]:
    text, rest = [], []
    for n, p in model.named_parameters():
        if tc.frozen and n.startswith(tuple(tc.frozen)):
            p.requires_grad_(False)
            continue
        (text if n.startswith("text.") else rest).append(p)
    groups = [{"params": rest, "lr": tc.lr}]
    if text:
        groups.append({"params": text, "lr": tc.text_lr})
    return groups


def balanced_draw(groups: list[list[int]], labels: Sequence[str], rng: random.Random) -> list[list[int]]:
    """As many dialogues as ``groups`` holds, drawn with replacement, each with a probability
    inversely proportional to the count of its utterances' labels (the mean over its utterances),
    so that every label is drawn about equally often; ``labels[i]`` is utterance i's."""
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    weights = [sum(1.0 / counts[labels[i]] for i in g) / len(g) for g in groups]
    return rng.choices(groups, weights=weights, k=len(groups))


def load_transcripts(path: str | Path) -> dict[str, str]:
    """{audio path: transcript} from a JSONL file of {"audio": ..., "asr": ...} lines
    (`hbaf-edge transcribe` writes them)."""
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise HBAFError(f"transcript file not found: {p}; make one with hbaf-edge transcribe")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["audio"])] = str(row["asr"])
        except (ValueError, KeyError, TypeError) as err:
            raise HBAFError(f"{p} line {n} is not a {{\"audio\": ..., \"asr\": ...}} JSON object ({err}); "
                            "write it again with hbaf-edge transcribe") from err
    if not out:
        raise HBAFError(f"transcript file {p} is empty; make one with hbaf-edge transcribe")
    return out


def check_classes(records: Sequence[Record]) -> None:
    """Training needs at least two labels in its 'train' split: on one, a model learns to answer that
    label to everything and still scores 100 on a test set of the same label. A one-line error."""
    train = [r.label for r in records if r.split == "train"]
    labels = sorted(set(train))
    if len(labels) == 1:
        raise HBAFError(f"every training utterance ({len(train)}) is labelled '{labels[0]}': a model trained on one label "
                        f"answers '{labels[0]}' to everything; add utterances of at least one other label (split 'train')")


def plan_epochs(tc: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, patience) for a corpus of ``steps_per_epoch`` batches: ``tc.epochs`` when set; else
    ``DEFAULT_EPOCHS``, or more on a small corpus so that training gets ``tc.min_steps`` optimizer
    steps (a 370-clip corpus: 6 batches an epoch, 50 epochs), the patience growing with them."""
    if tc.epochs is not None:
        return tc.epochs, tc.patience
    epochs = DEFAULT_EPOCHS
    if tc.max_steps is None and epochs * steps_per_epoch < tc.min_steps:
        epochs = min(tc.max_auto_epochs, math.ceil(tc.min_steps / max(1, steps_per_epoch)))
    return epochs, max(tc.patience, round(tc.patience * epochs / DEFAULT_EPOCHS))


def train(model: HBAF, records: list[Record], store: FeatureStore, tokenizer: Tokenizer, out_dir: str | Path,
          tc: TrainConfig, teacher_out: dict | None = None, augmented: Sequence[Any] = ()) -> dict:
    """Train on split 'train', select on 'dev' weighted F1 (early stopping), report 'test'.

    ``teacher_out`` (distillation): {"logits": [N, C], "utt_emb": [N, D_t]} aligned with ``records``.
    ``augmented``: further feature stores of the training utterances (in train-split order), each
    of degraded copies of the audio; every step takes each utterance from the clean store or one
    of these at random.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = random.Random(tc.seed)
    label_index = {lab: i for i, lab in enumerate(model.labels)}
    split_idx = {s: [i for i, r in enumerate(records) if r.split == s] for s in ("train", "dev", "test")}
    if not split_idx["train"]:
        raise HBAFError("no training utterances (split 'train' is empty); check the manifest's split field")
    if not split_idx["dev"]:
        raise HBAFError("no dev utterances for model selection (split 'dev' is empty); add a dev split to the manifest")
    check_classes(records)
    train_recs = [records[i] for i in split_idx["train"]]
    groups = group_dialogues(train_recs)
    targets = torch.tensor([label_index[r.label] for r in train_recs])
    steps_per_epoch = len(pack_batches(groups, tc.max_utts, None))
    epochs, patience = plan_epochs(tc, steps_per_epoch)
    if tc.epochs is None and epochs != DEFAULT_EPOCHS:
        log.info("small corpus (%d batches an epoch): %d epochs, patience %d", steps_per_epoch, epochs, patience)
    total_steps = epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, epochs * steps_per_epoch)
    for view in augmented:
        if len(view) != len(train_recs):
            raise HBAFError(f"an augmented feature store holds {len(view)} utterances, the train split {len(train_recs)}; rebuild it")
    param_groups = _param_groups(model, tc)
    hint = None
    if teacher_out is not None and tc.hint_weight > 0:
        # hidden-state hint: the student's utterance embedding, projected, regresses the teacher's
        hint = torch.nn.Linear(model.memory_dim, teacher_out["utt_emb"].shape[1])
        param_groups.append({"params": list(hint.parameters()), "lr": tc.lr})
    opt = torch.optim.AdamW(param_groups, weight_decay=tc.weight_decay)
    warm = max(1, int(tc.warmup * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total_steps))))))
    t_train = {k: torch.from_numpy(v[split_idx["train"]]) for k, v in teacher_out.items()} if teacher_out else None

    dev_recs = [records[i] for i in split_idx["dev"]]
    dev_store = SubStore(store, split_idx["dev"])
    tr_store = SubStore(store, split_idx["train"])
    views = [tr_store, *augmented]
    history, best, bad, step = [], -1.0, 0, 0
    t0 = time.time()
    bimodal = model.use_audio and model.use_text
    for epoch in range(epochs):
        model.train()
        batches = pack_batches(balanced_draw(groups, [r.label for r in train_recs], rng) if tc.balance else groups,
                               tc.max_utts, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        run_loss = 0.0
        for bi, batch in enumerate(bar):
            flat = [i for g in batch for i in g]
            feats, texts = [], []
            for i in flat:
                f = views[rng.randrange(len(views))][i] if len(views) > 1 else tr_store[i]
                txt = train_recs[i].text
                if tc.asr_text > 0 and rng.random() < tc.asr_text:
                    heard = (tc.asr_transcripts or {}).get(train_recs[i].audio)
                    txt = heard if heard is not None else asr_style(txt)
                u = rng.random()
                if bimodal and u < tc.modality_dropout:
                    txt = ""  # as if ASR returned nothing: the model must lean on audio
                elif bimodal and u < 1.5 * tc.modality_dropout:
                    f = _silence_like(f, model.cfg.feature_kind)
                feats.append(f)
                texts.append(txt)
            out = forward_dialogues(model, _relabel(batch), feats, texts, tokenizer)
            y = targets[flat]
            loss, _ = hbaf_loss(out, y, tc.loss)
            if t_train is not None:
                kd = distillation_loss(out["logits"], t_train["logits"][flat], tc.distill_temperature)
                loss = (1 - tc.distill_alpha) * loss + tc.distill_alpha * kd
                if hint is not None:
                    loss = loss + tc.hint_weight * torch.nn.functional.mse_loss(hint(out["utt_emb"]), t_train["utt_emb"][flat])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            loss_value = loss.item()
            run_loss = 0.9 * run_loss + 0.1 * loss_value if bi else loss_value
            bar.set_postfix(loss=f"{run_loss:.3f}")
            if tc.max_steps is not None and step >= tc.max_steps:
                break
        dev_report, _ = evaluate(model, dev_recs, dev_store, tokenizer, desc="dev")
        history.append({"epoch": epoch + 1, "step": step, "train_loss": run_loss, "dev_weighted_f1": dev_report["weighted_f1"],
                        "dev_accuracy": dev_report["accuracy"], "seconds": round(time.time() - t0, 1)})
        log.info("epoch %d: loss %.3f dev wF1 %.4f acc %.4f (%.0fs)", epoch + 1, run_loss, dev_report["weighted_f1"],
                 dev_report["accuracy"], time.time() - t0)
        if dev_report["weighted_f1"] > best:
            best, bad = dev_report["weighted_f1"], 0
            save_checkpoint(model, out_dir, tokenizer.file,
                            extra={"trained_epochs": epoch + 1, "dev_weighted_f1": best, "loss": asdict(tc.loss)})
        else:
            bad += 1
        write_json_atomic(out_dir / "history.json", history)
        if bad >= patience or (tc.max_steps is not None and step >= tc.max_steps):
            break
    return {"history": history, "best_dev_weighted_f1": best, "train_seconds": round(time.time() - t0, 1), "loss": asdict(tc.loss),
            "majority_baseline_test": _majority(records, split_idx, model.labels)}


def _majority(records: list[Record], split_idx: dict, labels: list[str]) -> dict | None:
    if not split_idx["test"]:
        return None
    li = {lab: i for i, lab in enumerate(labels)}
    return majority_baseline([li[records[i].label] for i in split_idx["train"]],
                             [li[records[i].label] for i in split_idx["test"]], labels)


def write_eval_outputs(out_dir: str | Path, name: str, report: dict, title: str) -> None:
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / f"{name}.json", report)
    plot_confusion(report["confusion_matrix"], report["labels"], out_dir / f"{name}_confusion.png", title=title)

