"""The feature cache: one file per feature kind and audio condition, subsets out of the whole cache."""

import numpy as np
import pytest
import soundfile as sf

from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from hbaf.data.manifest import load_manifest, write_manifest
from hbaf.data.records import Record
from hbaf.data.store import FeatureStore, augment_condition, condition_audio, feature_cache_path, manifest_subset
from hbaf.errors import HBAFError
from hbaf.features import utterance_features


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        path = tmp_path / f"u{i}.wav"
        t = np.arange(int((0.6 + 0.2 * i) * SAMPLE_RATE)) / SAMPLE_RATE
        sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
                 SAMPLE_RATE)
        records.append(Record(str(path), f"text {i}", "neutral", "s", "d0", i, "test", family="flite" if i % 2 else "festival"))
    return write_manifest(records, tmp_path / "m.jsonl")


def test_cache_per_kind_and_condition(manifest):
    records = load_manifest(manifest)
    assert [r.family for r in records] == ["festival", "flite", "festival", "flite"]  # the family survives the manifest
    mel = feature_cache_path(manifest, kind="log-mel")
    loud = feature_cache_path(manifest, kind="log-mel", condition="gain+12")
    assert mel != loud and mel != feature_cache_path(manifest)
    store = FeatureStore(records, mel, workers=1, kind="log-mel")
    assert mel.exists() and store[1].shape == (1 + int(0.8 * SAMPLE_RATE) // 160, 80)
    np.testing.assert_array_equal(store[2], utterance_features(load_audio(records[2].audio), "log-mel"))
    louder = FeatureStore(records, loud, workers=1, kind="log-mel", condition="gain+12")
    assert louder[0].mean() > store[0].mean()  # the degraded copy is computed from the louder audio
    again = FeatureStore.from_cache(records, mel, kind="log-mel")
    assert again is not None and all(np.array_equal(again[i], store[i]) for i in range(4))
    assert FeatureStore.from_cache(records, mel, kind="log-mel", condition="gain+12") is None  # another key
    sub = manifest_subset(manifest, [records[3], records[1]], kind="log-mel")
    assert sub is not None and np.array_equal(sub[0], store[3]) and np.array_equal(sub[1], store[1])
    assert manifest_subset(manifest, records[:2], kind="log-mel", condition="reverb") is None  # nothing cached


def test_augmented_copies_differ_and_repeat(manifest):
    wave = load_audio(load_manifest(manifest)[0].audio)
    first = condition_audio(wave, augment_condition(0), seed=7)
    assert np.array_equal(first, condition_audio(wave, "augment", seed=7))  # seeded: the same copy every time
    second = condition_audio(wave, augment_condition(1), seed=7)
    assert augment_condition(1) == "augment:2" and not np.array_equal(first, second)
    with pytest.raises(HBAFError, match="unknown audio condition 'muffled'"):
        FeatureStore(load_manifest(manifest), None, workers=1, kind="log-mel", condition="muffled")
