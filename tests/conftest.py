import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CI_CORPUS_LIMIT = 200  # utterances per split, whole dialogues

# The longest files first: with two workers taking whole files (scripts/test.sh), a long file
# that starts last runs alone at the end.
LONGEST_FIRST = ("test_train_cli.py", "test_out_of_box.py", "test_bench.py", "test_calibration.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def ci_corpus(tmp_path_factory) -> Path:
    """A small real MELD-TTS subset (synthetic speech), rendered once per test run."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.skip("espeak-ng and sox are needed to render speech; run scripts/install.sh")
    from hbaf.data.meld_tts import build_corpus

    out = tmp_path_factory.mktemp("meld-tts-ci")
    # two of the three families: festival renders at a few utterances a second (test_meld_tts covers it)
    build_corpus(out, limit=CI_CORPUS_LIMIT, seed=0, workers=2, families="espeak-ng,flite")
    return out


@pytest.fixture(scope="session")
def ci_student(ci_corpus, tmp_path_factory) -> Path:
    """A student trained on the CI subset through the real CLI (a few minutes on 2 cores at most;
    clean features only, which keeps it that short)."""
    from hbaf.cli import main

    out = tmp_path_factory.mktemp("student")
    rc = main(["train", "--corpus", str(ci_corpus), "--preset", "student", "--epochs", "10", "--patience", "4",
               "--max-utts", "32", "--lr", "1e-3", "--text-lr", "1e-4", "--augment", "0", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs mounted on a temporary folder: a real file system that fills up (needs root;
    skipped with the reason where mounting is not allowed)."""
    import subprocess

    folder = tmp_path / "small-disk"
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'mount failed'}; it needs root); "
                    "the /dev/full cases cover the writer and the command line")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
