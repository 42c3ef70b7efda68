"""Which Whisper encoder layer the emotion model should read: the layer table of docs/VOICES.md.

One encoder pass per clip gives every layer. ``extract`` runs it once per clip of a MELD-TTS
corpus (synthetic speech) and of the recordings of real people that install offline: our PyTorch
encoder (hbaf/whisper.py, float32) for the convolution stem, each block and the final layer
norm, and CTranslate2 int8 for the final layer as today's models read it (``whisper-tiny.en``).
Each clip's layers are kept in one file under ``WORK/frames``, so the run can be stopped and
resumed, and can follow a corpus that is still being rendered (``--follow``).

``caches`` writes those frames into the feature caches ``hbaf train`` reads (hbaf.data.store,
one file per feature kind), so ``hbaf train --features whisper-tiny.en:block2`` computes nothing.

``probe`` fits, on the training split, a linear probe per layer (mean and standard deviation of
the frames over the utterance, standardised, logistic regression) and a SUPERB-style learned
weighted sum of the layers (softmax weights over the per-layer-normalised frames, then the same
pooling and a linear layer), and reports on the test split: weighted F1 and unweighted recall,
per synthesizer family, with one family held out of training, and how many of the real
recordings (all read, neutral speech) each calls neutral. ``fused`` reads the ``metrics.json``
of ``hbaf train`` runs (one per layer) into the same table.

    python -m studies.layer_study extract --corpus DIR --work WORK [--per-split TRAIN,TEST,DEV] [--follow]
    python -m studies.layer_study manifest --corpus DIR --test-corpus DIR2 --work WORK --out study.jsonl
    python -m studies.layer_study caches --manifest study.jsonl --work WORK
    python -m studies.layer_study probe --manifest study.jsonl --work WORK [--hold-out espeak-ng] [--out table.json]
    python -m studies.layer_study fused RUN_DIR [RUN_DIR ...]

docs/VOICES.md ("Which encoder layer") gives the commands of its table.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from hbaf.contract import WHISPER_TINY_EN, WHISPER_TINY_EN_LAYERS
from hbaf.errors import ArgumentParser, cli_entry

INNER = tuple(WHISPER_TINY_EN_LAYERS)  # whisper-tiny.en:conv .. :block4
TORCH_FINAL = "torch-final"  # our PyTorch encoder's final layer norm (float32), beside CTranslate2's int8 one
LAYERS = (*INNER, TORCH_FINAL, WHISPER_TINY_EN)


def _frames_path(work: Path, split: str, name: str) -> Path:
    return work / "frames" / split / f"{name}.npz"


def _whole_dialogues(folder: Path, limit: int | None) -> list[Path]:
    """The clips of ``folder`` (``dia{D}_utt{U}.wav``), whole dialogues in dialogue order until
    ``limit`` clips (None: all)."""
    groups: dict[int, list[Path]] = {}
    for p in folder.glob("dia*.wav"):
        d, _, u = p.stem[3:].partition("_utt")
        groups.setdefault(int(d), []).append(p)
    out: list[Path] = []
    for d in sorted(groups):
        if limit is not None and len(out) + len(groups[d]) > limit:
            continue
        out += sorted(groups[d], key=lambda p: int(p.stem.partition("_utt")[2]))
    return out


def _split_limits(text: str) -> dict[str, int | None]:
    parts = dict(zip(("train", "test", "dev"), (int(x) if x else None for x in text.split(","))))
    return {s: parts.get(s) for s in ("train", "test", "dev")}


def _encode_all(wave: np.ndarray, whisper, ct2) -> dict[str, np.ndarray]:
    """Every layer of one clip from one PyTorch pass, and CTranslate2's final states."""
    import torch

    from hbaf.encoder import WINDOW_S, utterance_states, window_input, window_mel, window_states

    samples, n = window_input(wave)
    with torch.inference_mode():
        states, inner = whisper.encoder(torch.from_numpy(window_mel(samples, WINDOW_S))[None],
                                        layers=tuple(WHISPER_TINY_EN_LAYERS.values()))
    out = {kind: utterance_states(x[0].numpy(), n, kind) for kind, x in zip(INNER, inner)}
    out[TORCH_FINAL] = utterance_states(states[0].numpy(), n)
    out[WHISPER_TINY_EN] = window_states(ct2, wave)
    return out


def cmd_extract(args) -> int:
    import torch

    from hbaf.data.real_voices import find_real_recordings
    from hbaf.encoder import load_whisper
    from hbaf.audio import load_audio
    from hbaf.whisper import load_whisper_torch

    torch.set_num_threads(1)
    whisper, ct2 = load_whisper_torch(None), load_whisper(None, cpu_threads=1)
    corpus, work = Path(args.corpus), Path(args.work)
    done = n = 0
    t0 = time.time()
    real_done = False
    while True:
        jobs = [("real", r.id, r.path) for r in find_real_recordings()] if not real_done else []
        real_done = True
        for split in ("train", "test", "dev"):
            jobs += [(split, p.stem, p) for p in _whole_dialogues(corpus / "wav" / split, args.per_split[split])]
        todo = [j for j in jobs if not _frames_path(work, j[0], j[1]).exists()]
        for split, name, path in todo:
            layers = _encode_all(load_audio(path), whisper, ct2)
            target = _frames_path(work, split, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name("." + target.name)
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k.replace(":", "__"): v for k, v in layers.items()})
            os.replace(tmp, target)
            n += 1
            if n % 50 == 0:
                print(f"{n} clips encoded, {(time.time() - t0) / n:.3f} s per clip", flush=True)
        done = len(jobs)
        if not args.follow or (corpus / "manifest.jsonl").exists() and not todo:
            break
        time.sleep(20)
    print(f"{done} clips have every layer; {n} encoded in this run, {time.time() - t0:.0f} s", flush=True)
    return 0


def _load(work: Path, split: str, name: str) -> dict[str, np.ndarray]:
    with np.load(_frames_path(work, split, name)) as z:
        return {k.replace("__", ":"): z[k] for k in z.files}


def _records(manifest: Path):
    from hbaf.data.manifest import load_manifest

    return load_manifest(manifest)


def cmd_manifest(args) -> int:
    """A study manifest: the clips of a corpus folder (whose own manifest an interrupted render
    has not written yet: the records are re-derived from the same seeded selection) that have
    their frames and whole dialogues, plus the test split of another built corpus."""
    from collections import defaultdict

    from hbaf.data.meld_tts import (DEFAULT_NOISE_SNR_DB, DEFAULT_STRENGTH, check_families, dialogue_family, dialogue_voices,
                                    is_speakable, read_meld_csv, render_params, select_dialogues, utterance_name)

    corpus, work = Path(args.corpus).resolve(), Path(args.work)
    card = json.loads((corpus / "corpus.json").read_text())
    par = card["parameters"]
    seed, fams = int(par["seed"]), check_families(par["families"])
    lines = []
    for split in ("train", "dev"):
        utts = [u for u in read_meld_csv(split) if is_speakable(u["text"])]
        selected = select_dialogues(utts, par["limit"], seed=seed, split=split)
        by_dia = defaultdict(list)
        for u in selected:
            by_dia[int(u["dialogue_id"])].append(u)
        for d, us in sorted(by_dia.items()):
            names = [utterance_name(u) for u in us]
            if not all(_frames_path(work, split, n).exists() for n in names):
                continue
            voices = dialogue_voices([u["speaker"] for u in us], seed, dialogue_family(seed, split, d, fams))
            for u, n in zip(us, names):
                p = render_params(u, seed=seed, strength=float(par.get("strength", DEFAULT_STRENGTH)),
                                  noise_snr_db=tuple(par.get("noise_snr_db", DEFAULT_NOISE_SNR_DB)), voice=voices[u["speaker"]])
                lines.append({"audio": str(corpus / "wav" / split / f"{n}.wav"), "text": u["text"], "label": u["label"],
                              "speaker": u["speaker"], "dialogue": f"{split}-{d}", "index": int(u["utterance_id"]),
                              "split": split, "family": p.family})
    test = Path(args.test_corpus).resolve()
    for line in (test / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] == "test" and _frames_path(work, "test", Path(rec["audio"]).stem).exists():
            rec["audio"] = str(test / rec["audio"])
            lines.append(rec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    from collections import Counter

    print(out, dict(Counter(r["split"] for r in lines)), dict(Counter(r["family"] for r in lines)))
    return 0


def cmd_caches(args) -> int:
    from hbaf.data.store import FeatureStore, feature_cache_path

    manifest, work = Path(args.manifest), Path(args.work)
    records = _records(manifest)
    frames = [_load(work, r.split, Path(r.audio).stem) for r in records]
    for kind in (*INNER, WHISPER_TINY_EN):
        path = feature_cache_path(manifest, kind=kind)
        FeatureStore.from_features(records, [f[kind] for f in frames], path, kind=kind)
        print(f"{kind}: {path}")
    return 0


# ----------------------------------------------------------------------------- probes


def _pool(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x.mean(0), x.std(0)])


def _scores(y, pred, labels) -> dict:
    from hbaf.metrics import classification_report

    rep = classification_report(list(y), list(pred), labels)
    return {"n": len(y), "weighted_f1": rep["weighted_f1"], "ua": rep["unweighted_accuracy"], "accuracy": rep["accuracy"]}


def _linear_probe(xtr, ytr, xte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1, class_weight="balanced"))
    clf.fit(xtr, ytr)
    return clf


def _weighted_sum_probe(train, ytr, n_classes: int, seed: int = 0, epochs: int = 60):
    """SUPERB-style: softmax weights over the layers (each layer-normalised per frame), mean+std
    pooling, a linear classifier; trained with Adam, class-balanced. Returns (predict, weights)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    kinds = (*INNER, TORCH_FINAL)
    w = nn.Parameter(torch.zeros(len(kinds)))
    dim = train[0][kinds[0]].shape[1]
    norm = nn.LayerNorm(dim, elementwise_affine=False)
    bn = nn.BatchNorm1d(2 * dim)
    head = nn.Linear(2 * dim, n_classes)
    params = [w, *bn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-3)
    counts = np.bincount(ytr, minlength=n_classes).astype(np.float32)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / np.maximum(counts, 1) / n_classes))
    stacks = [torch.from_numpy(np.stack([f[k] for k in kinds])) for f in train]  # [L, T, W] per clip

    def pooled(batch):
        out = []
        a = torch.softmax(w, 0)
        for s in batch:
            x = (a[:, None, None] * norm(s)).sum(0)
            out.append(torch.cat([x.mean(0), x.std(0)]))
        return torch.stack(out)

    y = torch.tensor(ytr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        bn.train()
        for idx in np.array_split(rng.permutation(len(stacks)), max(1, len(stacks) // 64)):
            opt.zero_grad()
            loss = loss_fn(head(bn(pooled([stacks[i] for i in idx]))), y[idx])
            loss.backward()
            opt.step()

    def predict(clips):
        bn.eval()
        with torch.no_grad():
            return head(bn(pooled([torch.from_numpy(np.stack([f[k] for k in kinds])) for f in clips]))).argmax(1).numpy()

    return predict, dict(zip(kinds, torch.softmax(w, 0).detach().numpy().round(3).tolist()))


def cmd_probe(args) -> int:
    corpus, work = Path(args.manifest), Path(args.work)
    records = _records(corpus)
    labels = sorted({r.label for r in records})
    li = {lab: i for i, lab in enumerate(labels)}
    real_ids = sorted(p.stem for p in (work / "frames" / "real").glob("*.npz"))
    real = [_load(work, "real", i) for i in real_ids]
    tr = [r for r in records if r.split == "train"]
    te = [r for r in records if r.split == "test"]
    if args.limit_train:
        tr = tr[: args.limit_train]
    ftr = [_load(work, r.split, Path(r.audio).stem) for r in tr]
    fte = [_load(work, r.split, Path(r.audio).stem) for r in te]
    ytr = np.array([li[r.label] for r in tr])
    yte = np.array([li[r.label] for r in te])
    fam_te = np.array([r.family for r in te])
    fam_tr = np.array([r.family for r in tr])
    seen = fam_tr != args.hold_out
    unseen = fam_te == args.hold_out
    neutral = li.get("neutral")
    table: dict[str, dict] = {}
    for kind in LAYERS:
        t0 = time.time()
        xtr = np.stack([_pool(f[kind]) for f in ftr])
        xte = np.stack([_pool(f[kind]) for f in fte])
        xre = np.stack([_pool(f[kind]) for f in real])
        clf = _linear_probe(xtr, ytr, xte)
        pred = clf.predict(xte)
        held = _linear_probe(xtr[seen], ytr[seen], xte)
        row = {"test": _scores(yte, pred, list(range(len(labels)))),
               "by_family": {fam: _scores(yte[fam_te == fam], pred[fam_te == fam], list(range(len(labels))))
                             for fam in sorted(set(fam_te))},
               "held_out": _scores(yte[unseen], held.predict(xte[unseen]), list(range(len(labels)))),
               "held_out_seen_families": _scores(yte[~unseen], held.predict(xte[~unseen]), list(range(len(labels)))),
               "real_neutral": int((clf.predict(xre) == neutral).sum()), "real_n": len(real)}
        table[kind] = row
        print(f"{kind:24s} test wF1 {100 * row['test']['weighted_f1']:.1f} UA {100 * row['test']['ua']:.1f} | "
              f"held-out {args.hold_out} UA {100 * row['held_out']['ua']:.1f} (seen {100 * row['held_out_seen_families']['ua']:.1f}) | "
              f"real neutral {row['real_neutral']}/{len(real)}  ({time.time() - t0:.0f} s)", flush=True)
    if not args.no_weighted_sum:
        t0 = time.time()
        predict, weights = _weighted_sum_probe(ftr, ytr, len(labels))
        pred = predict(fte)
        held_predict, _ = _weighted_sum_probe([f for f, s in zip(ftr, seen) if s], ytr[seen], len(labels))
        hp = held_predict([f for f, u in zip(fte, unseen) if u])
        hs = held_predict([f for f, u in zip(fte, unseen) if not u])
        row = {"test": _scores(yte, pred, list(range(len(labels)))),
               "by_family": {fam: _scores(yte[fam_te == fam], pred[fam_te == fam], list(range(len(labels))))
                             for fam in sorted(set(fam_te))},
               "held_out": _scores(yte[unseen], hp, list(range(len(labels)))),
               "held_out_seen_families": _scores(yte[~unseen], hs, list(range(len(labels)))),
               "real_neutral": int((predict(real) == neutral).sum()), "real_n": len(real), "weights": weights}
        table["weighted-sum"] = row
        print(f"{'weighted-sum':24s} test wF1 {100 * row['test']['weighted_f1']:.1f} UA {100 * row['test']['ua']:.1f} | "
              f"held-out UA {100 * row['held_out']['ua']:.1f} (seen {100 * row['held_out_seen_families']['ua']:.1f}) | "
              f"real neutral {row['real_neutral']}/{len(real)} | weights {weights}  ({time.time() - t0:.0f} s)", flush=True)
    meta = {"corpus": str(corpus), "train": len(tr), "test": len(te), "hold_out": args.hold_out,
            "labels": labels, "real": real_ids, "synthetic": "MELD-TTS is synthetic speech; 'real' are recordings of people"}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "probe": table}, indent=1))
    return 0


def cmd_agreement(args) -> int:
    """A trained model on its training features (PyTorch float32 for an inner layer, CTranslate2
    int8 for the last) vs on what an encoder graph gives at run time, over the test split: top-1
    agreement, accuracy and the cosine of the features."""
    import torch

    from edge_runtime.recogniser import OnnxEncoder
    from hbaf.audio import load_audio
    from hbaf.checkpoint import load_checkpoint, tokenizer_path
    from hbaf.contract import FEATURE_FORMATS
    from hbaf.encoder import WINDOW_S, utterance_states, window_input, window_mel
    from hbaf.text import Tokenizer
    from hbaf.train import evaluate

    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint)
    kind = model.cfg.feature_kind
    fmt = FEATURE_FORMATS[kind]
    records = [r for r in _records(Path(args.manifest)) if r.split == "test"]
    work = Path(args.work)
    ref = [_load(work, r.split, Path(r.audio).stem)[kind] for r in records]
    enc = OnnxEncoder(args.encoder, threads=1)
    layers = () if fmt.layer is None else (fmt.encoder_output,)
    got = []
    for r in records:
        samples, n = window_input(load_audio(r.audio), kind)
        got.append(utterance_states(enc.encode(window_mel(samples, WINDOW_S), layers).host_layer(fmt.encoder_output), n, kind))
    cos = [float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) for a, b in zip(ref, got)]
    tok = Tokenizer(tokenizer_path(args.checkpoint), model.cfg.max_tokens)
    rep_ref, p_ref = evaluate(model, records, ref, tok, desc="training features")
    rep_got, p_got = evaluate(model, records, got, tok, desc=enc.name)
    agree = float((p_ref["probs"].argmax(1) == p_got["probs"].argmax(1)).mean())
    print(f"{kind}: {enc.name} vs training features over {len(records)} test clips: top-1 agreement {100 * agree:.1f} %, "
          f"weighted F1 {100 * rep_ref['weighted_f1']:.1f} -> {100 * rep_got['weighted_f1']:.1f}, "
          f"feature cosine mean {np.mean(cos):.4f} min {np.min(cos):.4f}")
    return 0


def cmd_fused(args) -> int:
    for run in args.runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        fams = m.get("test_by_family", {})
        cells = [f"{m.get('feature_kind')}", f"fused wF1 {100 * m['test']['weighted_f1']:.1f}",
                 f"audio alone wF1 {100 * m['test_audio_only']['weighted_f1']:.1f} UA {100 * m['test_audio_only']['unweighted_accuracy']:.1f}"]
        cells += [f"{fam}: {100 * v['fused']['weighted_f1']:.1f} / {100 * v['audio_only']['unweighted_accuracy']:.1f}"
                  for fam, v in fams.items()]
        print(run, " | ".join(cells))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m studies.layer_study", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--corpus", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--follow", action="store_true", help="keep encoding new clips until the corpus's manifest is written")
    p.add_argument("--per-split", type=_split_limits, default=_split_limits(",,"), metavar="TRAIN,TEST,DEV",
                   help="at most this many clips of each split, whole dialogues (empty: all)")
    p = sub.add_parser("manifest")
    p.add_argument("--corpus", required=True)
    p.add_argument("--test-corpus", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("caches")
    p.add_argument("--manifest", required=True)
    p.add_argument("--work", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--manifest", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--hold-out", default="espeak-ng")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--no-weighted-sum", action="store_true")
    p.add_argument("--out", default=None)
    p = sub.add_parser("agreement")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--encoder", required=True, help="an encoder graph from `hbaf-export asr`")
    p.add_argument("--manifest", required=True)
    p.add_argument("--work", required=True)
    p = sub.add_parser("fused")
    p.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)
    commands = {"extract": cmd_extract, "manifest": cmd_manifest, "caches": cmd_caches, "agreement": cmd_agreement,
                "probe": cmd_probe, "fused": cmd_fused}
    return commands[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
