"""`hbaf adapt`: fit a trained model (the packaged student by default) to a user's own labelled clips.

The recipe, for 50 to 1,000 clips (docs/VOICES.md, "Adapting to your voices"):

- **Start** from the packaged student (or ``--from DIR``, any checkpoint). The model keeps its
  labels, its sizes and its audio feature kind (whichever encoder layer it reads: the features
  are computed for that kind), so the adapted model runs wherever the starting one ran.
- **Labels** are the model's. A manifest label the model lacks is mapped when the mapping is
  obvious (``angry`` -> ``anger``, ``happy`` -> ``joy``, ``sad`` -> ``sadness``, IEMOCAP's
  ``ang``/``hap``/``neu``/``sad``, ...); any other is refused with the model's label list
  (`hbaf train` learns any label set).
- **Splits.** Lines marked ``test`` are never trained on and give the test report. A ``dev``
  split, when the manifest has none, is made from the ``speaker`` field: about a fifth of the
  speakers (whole speakers, so the dev score is speaker-independent, the figure that says how
  the model does on a voice it has not heard). With fewer than 2 speakers a seeded random,
  label-stratified split is made instead, and a warning says so.
- **Class balance.** Every epoch draws the training clips with probability inversely
  proportional to their label's count (with replacement), so a rare class is seen as often as
  a frequent one.
- **A few hundred steps.** Batches of 32 clips, at least 300 optimizer steps (more epochs on a
  small set, 80 at most), AdamW at 2e-4 with warm-up and cosine decay, early stopping on dev
  weighted F1 (the checkpoint kept is the best dev epoch).
- **The text branch** (text encoder, its projection, its context attention and its head) is
  frozen unless every clip's text is what the recogniser wrote (``--asr-transcripts``
  covering every clip). Reference transcripts are not what the runtime feeds the model (no
  "!", no misheard words), and a few hundred clips are too few to retrain a language model
  on; the audio branch and the fusion layers learn. ``--text-branch train|freeze`` overrides.
  With reference text, half the training transcripts are also rewritten as the recogniser
  writes them (``hbaf.text.asr_style``), as `hbaf train --asr-text 0.5` does.

Nothing half-written is left in ``--out``: everything is written into a temporary sibling
folder, which replaces ``--out`` only when the run has finished (an ``--out`` that holds
anything but an earlier `hbaf adapt` result is refused).

``--export`` then runs the one export entry (`hbaf-export all`) on the adapted checkpoint, as
its own process: the training package never imports the export layer (layers point down).
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from hbaf.data.records import Record
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

RESULT = "adapt.json"  # what marks a folder as an `hbaf adapt` result
DATA = "data.jsonl"  # the clips, texts, mapped labels and splits the run used
TEXT_BRANCH = ("text.", "text_proj.", "t_ctx.", "text_head.")  # parameter prefixes frozen with the text branch
TEXT_CHOICES = ("auto", "train", "freeze")

# Spellings of the model's labels in common corpora and in everyday use. A label maps only when
# the mapping is not a judgement call (no "calm" -> neutral, no "frustrated" -> anger).
LABEL_ALIASES = {
    "anger": ("angry", "ang", "anger", "mad"),
    "disgust": ("disgusted", "disgust", "dis"),
    "fear": ("fear", "fearful", "afraid", "scared", "fea"),
    "joy": ("joy", "happy", "happiness", "joyful", "hap"),
    "neutral": ("neutral", "neu", "neut"),
    "sadness": ("sad", "sadness"),
    "surprise": ("surprise", "surprised", "sur"),
}


@dataclass
class AdaptConfig:
    manifest: str
    out: str
    start: str = "default"  # checkpoint folder; "default" is the packaged student
    per_class: int | None = None
    export: bool = False
    text_branch: str = "auto"
    asr_transcripts: str | None = None
    seed: int = 0
    dev_fraction: float = 0.2
    lr: float = 2e-4
    text_lr: float = 2e-5
    max_utts: int = 32
    min_steps: int = 300
    epochs: int | None = None
    max_steps: int | None = None
    patience: int = 3
    augment: int = 0
    balance: bool = True
    threads: int | None = None
    workers: int | None = None


# ----------------------------------------------------------------------------- labels


def map_labels(labels: Sequence[str], model_labels: Sequence[str]) -> dict[str, str]:
    """{manifest label: model label} for every label of ``labels``; an HBAFError listing the
    model's labels when one has no obvious counterpart."""
    known = {lab.lower(): lab for lab in model_labels}
    alias = {a: target for target, names in LABEL_ALIASES.items() if target in known for a in names}
    mapping, missing = {}, []
    for lab in sorted(set(labels)):
        key = lab.strip().lower()
        if key in known:
            mapping[lab] = known[key]
        elif key in alias:
            mapping[lab] = known[alias[key]]
        else:
            missing.append(lab)
    if missing:
        raise HBAFError(f"label(s) {', '.join(repr(m) for m in missing)} are not among the model's labels "
                        f"({', '.join(model_labels)}); relabel or drop those lines, or train a model on your own label set "
                        "with `hbaf train --manifest ...`")
    return mapping


# ----------------------------------------------------------------------------- the manifest


def _read_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every JSON-object line; anything else is left to load_manifest's checks."""
    out = []
    try:
        raw = path.read_bytes()
    except OSError:
        return out
    for n, line in enumerate(raw.decode("utf-8", "replace").lstrip("\ufeff").splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((n, obj))
    return out


def _transcripts(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from hbaf.train import load_transcripts

    return load_transcripts(path)


def _quiet_load(path: Path, seed: int, has_split: bool) -> list[Record]:
    """load_manifest, without its report of the train/dev/test split it makes for a manifest that
    has none (adapt makes its own)."""
    from hbaf.data.manifest import load_manifest

    if has_split:
        return load_manifest(path, seed=seed)
    loggers = [logging.getLogger(name) for name in ("hbaf.data.manifest", "hbaf.data.splits")]
    levels = [lg.level for lg in loggers]
    loggers[0].setLevel(logging.WARNING)
    loggers[1].setLevel(logging.ERROR)
    try:
        return load_manifest(path, seed=seed)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def load_adapt_records(manifest: str | os.PathLike, work: Path, asr_transcripts: str | None, seed: int = 0
                       ) -> tuple[list[Record], bool, bool]:
    """(records in file order, the manifest had a split field, every text came from the recogniser).

    Lines without a text take it from ``asr_transcripts`` (keyed by the audio path, absolute or as
    the manifest writes it); with transcripts, every clip that has one is given it, as the runtime
    would. A line with neither is a one-line error."""
    from hbaf.data.manifest import load_manifest

    mpath = Path(manifest).expanduser()
    if not mpath.is_file():
        load_manifest(mpath)  # its one-line error (missing, a folder)
    heard = _transcripts(asr_transcripts)
    lines = _read_lines(mpath)
    has_split = any(str(obj.get("split") or "").strip() for _, obj in lines)
    base = mpath.resolve().parent
    no_text = [n for n, obj in lines if not (isinstance(obj.get("text"), str) and obj["text"].strip())]
    if not heard:
        if no_text:
            raise HBAFError(f"{len(no_text)} line(s) of {mpath} have no text (e.g. line {no_text[0]}); give the transcript, "
                            "or transcribe the clips with the recogniser and pass --asr-transcripts FILE")
        return _quiet_load(mpath, seed, has_split), has_split, False
    # fill the texts from the recogniser's transcripts: a copy of the manifest in the work folder
    filled, from_asr, missing = [], 0, []
    for n, obj in lines:
        audio = obj.get("audio")
        obj = dict(obj)
        if isinstance(audio, str) and audio.strip():
            absolute = os.path.abspath(os.path.join(base, os.path.expanduser(audio.strip())))
            text = heard.get(absolute, heard.get(audio))
            obj["audio"] = absolute
            if text is not None:
                obj["text"] = text if text.strip() else "..."  # the recogniser heard no words: a placeholder token
                from_asr += 1
            elif not (isinstance(obj.get("text"), str) and obj["text"].strip()):
                missing.append(n)
        filled.append(obj)
    if missing:
        raise HBAFError(f"{len(missing)} line(s) of {mpath} have no text and no entry in {asr_transcripts} "
                        f"(e.g. line {missing[0]}); transcribe those clips too, or give their text")
    copy = work / "manifest.filled.jsonl"
    copy.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in filled), encoding="utf-8")
    records = _quiet_load(copy, seed, has_split)
    return records, has_split, from_asr == len(records)


# ----------------------------------------------------------------------------- selection and splits


def select_per_class(records: Sequence[Record], n: int, seed: int = 0) -> list[int]:
    """Positions of ``n`` clips of each label among the records that are not ``test`` (all of a
    label that has fewer), spread over the speakers (seeded round robin), and of every test
    record; in order."""
    if n < 1:
        raise HBAFError(f"--per-class must be at least 1, got {n}")
    rng = random.Random(seed)
    chosen: set[int] = set()
    by_label: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        if r.split != "test":
            by_label[r.label][r.speaker].append(i)
    for label in sorted(by_label):
        speakers = sorted(by_label[label])
        rng.shuffle(speakers)
        queues = []
        for s in speakers:
            q = list(by_label[label][s])
            rng.shuffle(q)
            queues.append(q)
        taken = 0
        while taken < n and any(queues):
            for q in queues:
                if q and taken < n:
                    chosen.add(q.pop())
                    taken += 1
        if taken < n:
            log.info("--per-class %d: label %s has only %d clip(s); all are used", n, label, taken)
    return [i for i, r in enumerate(records) if r.split == "test" or i in chosen]


def make_dev_split(records: Sequence[Record], fraction: float = 0.2, seed: int = 0) -> tuple[list[Record], str]:
    """``records`` (no ``dev`` among them) with about ``fraction`` of the non-test ones moved to
    ``dev``: whole speakers when there are at least 2, else a seeded label-stratified random
    draw (a warning says so). Returns (records, how the split was made)."""
    from hbaf.data.splits import assign_groups

    pool = [i for i, r in enumerate(records) if r.split != "test"]
    speakers = Counter(records[i].speaker for i in pool)
    out = list(records)
    if len(speakers) >= 2:
        where = assign_groups(speakers, seed=seed, fractions={"train": 1 - fraction, "dev": fraction})
        for i in pool:
            out[i] = replace(records[i], split=where[records[i].speaker])
        dev_speakers = sorted(s for s, sp in where.items() if sp == "dev")
        how = f"speaker-independent dev split: speaker(s) {', '.join(dev_speakers)} ({sum(speakers[s] for s in dev_speakers)} clips)"
        return out, how
    log.warning("only %d speaker in the clips to learn from (%s): the dev split is random, not speaker-independent, "
                "so the dev score is optimistic; give each line a 'speaker' field, or mark dev lines with 'split'",
                len(speakers), next(iter(speakers), "none"))
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        by_label[records[i].label].append(i)
    dev: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        k = round(fraction * len(idx)) if len(idx) >= 2 else 0
        dev.update(idx[:k])
    if not dev and len(pool) >= 2:
        dev.add(rng.choice(pool))
    for i in pool:
        out[i] = replace(records[i], split="dev" if i in dev else "train")
    return out, f"random dev split ({len(dev)} clips; fewer than 2 speakers)"


def decide_text_branch(choice: str, all_from_recogniser: bool) -> tuple[bool, str]:
    """(freeze the text branch, why)."""
    if choice not in TEXT_CHOICES:
        raise HBAFError(f"--text-branch must be one of {', '.join(TEXT_CHOICES)}, got {choice!r}")
    if choice == "freeze":
        return True, "frozen (--text-branch freeze)"
    if choice == "train":
        return False, "trained (--text-branch train)"
    if all_from_recogniser:
        return False, "trained: every text is the recogniser's (--asr-transcripts)"
    return True, "frozen: the texts are reference transcripts, not what the recogniser writes (pass --asr-transcripts to train it)"


# ----------------------------------------------------------------------------- the output folder


def check_out(out: Path) -> None:
    """``out`` may be new, empty, or an earlier `hbaf adapt` result (replaced at the end)."""
    if out.exists() and not out.is_dir():
        raise HBAFError(f"--out {out} is a file; give a folder for the adapted model")
    if out.is_dir() and any(out.iterdir()) and not (out / RESULT).is_file():
        raise HBAFError(f"--out {out} already holds files that are not an `hbaf adapt` result; choose another folder or empty it")


def publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder onto ``out`` (an earlier result there is replaced)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size of this process and of its largest finished child process, in MB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self_mb": round(self_kb / 1024, 1), "largest_child_mb": round(child_kb / 1024, 1)}


# ----------------------------------------------------------------------------- features


def adapt_features(all_records: Sequence[Record], chosen_idx: Sequence[int], manifest: Path, kind: str,
                   workers: int | None) -> list:
    """Features of ``all_records[i]`` for i in ``chosen_idx``: out of the manifest's whole cache when
    current (`hbaf train` writes it), else computed for those clips alone and cached next to the manifest."""
    from hbaf.data.store import FeatureStore, feature_cache_path

    whole = FeatureStore.from_cache(all_records, feature_cache_path(manifest, kind=kind), kind)
    if whole is not None:
        return [whole[i] for i in chosen_idx]
    chosen = [all_records[i] for i in chosen_idx]
    if len(chosen) == len(all_records):
        store = FeatureStore(chosen, feature_cache_path(manifest, kind=kind), workers=workers, kind=kind)
    else:
        store = FeatureStore(chosen, feature_cache_path(manifest, chosen, tag="adapt", kind=kind), workers=workers, kind=kind)
    return [store[i] for i in range(len(chosen))]


def check_readable(records: Sequence[Record]) -> None:
    """Decode every clip once; the first that is not audio is a one-line error naming it."""
    from hbaf.audio import load_audio

    for r in records:
        wave = load_audio(r.audio)
        if wave.size == 0:
            raise HBAFError(f"audio file holds no samples: {r.audio}; re-export it or remove its line")


# ----------------------------------------------------------------------------- the run


def _brief(report: dict) -> dict:
    return {k: report[k] for k in ("n", "accuracy", "unweighted_accuracy", "weighted_f1", "macro_f1") if k in report}


def _evaluate_splits(model, records, store, tok, splits=("dev", "test")) -> dict:
    from hbaf.data.store import SubStore
    from hbaf.train import evaluate

    out = {}
    for split in splits:
        idx = [i for i, r in enumerate(records) if r.split == split]
        if idx:
            report, _ = evaluate(model, [records[i] for i in idx], SubStore(store, idx), tok, desc=split)
            out[split] = {"n": len(idx), **_brief(report), "confusion_matrix": report["confusion_matrix"]}
    return out


def _fmt(m: dict) -> str:
    return (f"accuracy {100 * m['accuracy']:.1f}  UA {100 * m['unweighted_accuracy']:.1f}  "
            f"weighted F1 {100 * m['weighted_f1']:.1f}  (n={m['n']})")


def adapt(cfg: AdaptConfig) -> dict:
    """Run the recipe; returns the summary that is also written to ``<out>/adapt.json``."""
    import torch

    from hbaf.checkpoint import load_checkpoint, resolve_checkpoint, tokenizer_path
    from hbaf.data.manifest import write_manifest
    from hbaf.io import write_json_atomic
    from hbaf.text import Tokenizer
    from hbaf.train import TrainConfig, check_classes, train

    t0 = time.time()
    out = Path(cfg.out).expanduser()
    check_out(out)
    if cfg.text_branch not in TEXT_CHOICES:
        decide_text_branch(cfg.text_branch, False)
    if cfg.per_class is not None and cfg.per_class < 1:
        raise HBAFError(f"--per-class must be at least 1, got {cfg.per_class}")
    if not 0.05 <= cfg.dev_fraction <= 0.5:
        raise HBAFError(f"--dev-fraction must be between 0.05 and 0.5, got {cfg.dev_fraction}")
    start = resolve_checkpoint(cfg.start)
    model, meta = load_checkpoint(start)
    kind = model.cfg.feature_kind
    log.info("start: %s (labels %s; audio features %s)", start, ", ".join(model.labels), kind)
    manifest = Path(cfg.manifest).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        records, has_split, all_asr = load_adapt_records(manifest, tmp, cfg.asr_transcripts, cfg.seed)
        all_records = records
        mapping = map_labels([r.label for r in records], model.labels)
        renamed = {k: v for k, v in mapping.items() if k != v}
        if renamed:
            log.info("labels mapped to the model's: %s", ", ".join(f"{k} -> {v}" for k, v in sorted(renamed.items())))
        records = [replace(r, label=mapping[r.label], split=r.split if has_split else "train") for r in records]
        learn_labels = sorted({r.label for r in records if r.split != "test"})
        if len(learn_labels) < 2:
            what = f"labelled '{learn_labels[0]}'" if learn_labels else "missing"
            raise HBAFError(f"every clip to learn from is {what}: a model adapted on one class answers it to everything; "
                            "add clips of at least one other label")
        index = select_per_class(records, cfg.per_class, cfg.seed) if cfg.per_class else list(range(len(records)))
        chosen = [records[i] for i in index]
        if any(r.split == "dev" for r in chosen):
            split_how = "the manifest's dev split"
        else:
            chosen, split_how = make_dev_split(chosen, cfg.dev_fraction, cfg.seed)
        check_classes(chosen)
        counts = {s: dict(sorted(Counter(r.label for r in chosen if r.split == s).items())) for s in ("train", "dev", "test")}
        speakers = {s: len({r.speaker for r in chosen if r.split == s}) for s in ("train", "dev", "test")}
        log.info("%s; clips: train %d, dev %d, test %d; speakers: train %d, dev %d, test %d", split_how,
                 *(sum(counts[s].values()) for s in ("train", "dev", "test")), *(speakers[s] for s in ("train", "dev", "test")))
        freeze, text_why = decide_text_branch(cfg.text_branch, all_asr)
        log.info("text branch %s", text_why)

        t_feat = time.time()
        check_readable(chosen)  # a bad clip is named before minutes of encoding
        feats = adapt_features(all_records, index, manifest, kind, cfg.workers)
        write_manifest(chosen, tmp / DATA)
        (tmp / "manifest.filled.jsonl").unlink(missing_ok=True)
        from hbaf.data.store import FeatureStore, feature_cache_path

        # the store the training reads, also written as the feature cache of the result's data.jsonl
        # (so that `hbaf train`, `hbaf evaluate` and `hbaf-export` on it reuse these features)
        store = FeatureStore.from_features(chosen, feats, feature_cache_path(tmp / DATA, kind=kind), kind=kind)
        del feats
        feature_seconds = round(time.time() - t_feat, 1)
        augmented = []
        if cfg.augment:
            from hbaf.data.store import augment_condition

            train_recs = [r for r in chosen if r.split == "train"]
            augmented = [FeatureStore(train_recs, feature_cache_path(tmp / DATA, train_recs, "train", kind, augment_condition(k)),
                                      workers=cfg.workers, kind=kind, condition=augment_condition(k))
                         for k in range(cfg.augment)]

        tok = Tokenizer(tokenizer_path(start), model.cfg.max_tokens)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        before = _evaluate_splits(model, chosen, store, tok)
        for split, m in before.items():
            log.info("before adapting, %s: %s", split, _fmt(m))
        tc = TrainConfig(epochs=cfg.epochs, min_steps=cfg.min_steps, max_utts=cfg.max_utts, lr=cfg.lr, text_lr=cfg.text_lr,
                         patience=cfg.patience, seed=cfg.seed, max_steps=cfg.max_steps, threads=cfg.threads,
                         asr_text=0.0 if all_asr else 0.5, balance=cfg.balance, frozen=TEXT_BRANCH if freeze else ())
        t_train = time.time()
        summary = train(model, chosen, store, tok, tmp, tc, augmented=augmented)
        train_seconds = round(time.time() - t_train, 1)
        best, _ = load_checkpoint(tmp)
        after = _evaluate_splits(best, chosen, store, tok)
        for split, m in after.items():
            log.info("adapted, %s: %s", split, _fmt(m))
        if "dev" in before and after["dev"]["weighted_f1"] < before["dev"]["weighted_f1"]:
            log.warning("the adapted model scores below the starting model on dev (weighted F1 %.1f vs %.1f, %d clips); "
                        "the starting model may suit these clips better, or the dev split is too small to tell",
                        100 * after["dev"]["weighted_f1"], 100 * before["dev"]["weighted_f1"], after["dev"]["n"])
        result = {
            "start": str(start), "start_dev_weighted_f1": meta.get("dev_weighted_f1"), "feature_kind": kind,
            "labels": best.labels, "label_map": renamed, "manifest": str(manifest.resolve()),
            "per_class": cfg.per_class, "split": split_how, "counts": counts, "speakers": speakers,
            "text_branch": text_why, "frozen": list(tc.frozen), "config": asdict(cfg),
            "steps": summary["history"][-1]["step"] if summary["history"] else 0,
            "epochs_run": len(summary["history"]), "history": summary["history"],
            "before": before, "after": after, "feature_seconds": feature_seconds, "train_seconds": train_seconds,
        }
        if cfg.export:
            result["export"] = _export(tmp, chosen)
        result["seconds"] = round(time.time() - t0, 1)
        result["peak_rss"] = peak_rss_mb()
        write_json_atomic(tmp / RESULT, result)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _export(folder: Path, records: Sequence[Record]) -> dict:
    """`hbaf-export all` on the adapted checkpoint in ``folder`` (calibrated on its train clips),
    into ``folder/export``; the INT8 CPU model is ``export/model.int8-cpu.onnx``."""
    split = "test" if any(r.split == "test" for r in records) else "dev"
    n_train = sum(r.split == "train" for r in records)
    cmd = [sys.executable, "-m", "export.cli", "all", "--checkpoint", str(folder), "--manifest", str(folder / DATA),
           "--out", str(folder / "export"), "--eval-split", split, "--num", str(min(512, n_train)),
           "--latency-runs", "20", "--engines", "auto", "--asr", "off"]
    # --asr off: adapting leaves the recogniser as it is, so its graphs (about 35 s on 2 cores, 0.49 GB) and engines
    # come once per machine from `hbaf-export all` or `hbaf-export asr`, not once per adapted model
    log.info("exporting: hbaf-export %s", " ".join(cmd[3:]))
    t = time.time()
    errors: list[str] = []
    # its lines are passed on as they come (progress); bars redraw with carriage returns and are dropped
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n").split("\r")[-1].rstrip()
            if line.startswith("error:"):
                errors.append(line[len("error:"):].strip())
            elif line and "%|" not in line:
                log.info("  %s", line)
    if proc.returncode != 0:
        why = errors[-1] if errors else f"hbaf-export exited with status {proc.returncode}"
        raise HBAFError(f"the export failed ({why}); nothing was written to --out")
    model = folder / "export" / "model.int8-cpu.onnx"
    if not model.is_file():
        raise HBAFError(f"the export wrote no {model.name}; run `hbaf-export all --checkpoint ...` by hand to see why")
    return {"int8_cpu": "export/model.int8-cpu.onnx", "seconds": round(time.time() - t, 1), "eval_split": split}
