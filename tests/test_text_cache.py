"""Text cache: round trip, a second run skips the text encoder, other model / corrupt file refused."""

from __future__ import annotations

import pytest
import torch

from dart.detector import Detector
from dart.errors import CacheError
from dart.text_cache import TextCache


class CountingEncoder:
    def __init__(self, backend):
        self.backend = backend
        self.calls: list[list[str]] = []

    def __call__(self, names):
        self.calls.append(list(names))
        return self.backend.encode_text(names)


def test_round_trip_and_second_run_skips_encoder(tmp_path, tiny_backend):
    path = tmp_path / "text.safetensors"
    enc = CountingEncoder(tiny_backend)
    first = TextCache(tiny_backend.fingerprint, path)
    feats, mask = first.get(["person", "car"], enc)
    assert path.exists() and enc.calls == [["person", "car"]]

    second = TextCache(tiny_backend.fingerprint, path)
    feats2, mask2 = second.get(["car", "person"], enc)
    assert enc.calls == [["person", "car"]]  # nothing re-encoded
    torch.testing.assert_close(feats2, feats.flip(0))
    assert torch.equal(mask2, mask.flip(0))

    # a new class is encoded alone and appended to the file
    second.get(["person", "dog"], enc)
    assert enc.calls[-1] == ["dog"]
    assert set(TextCache(tiny_backend.fingerprint, path).entries) == {"person", "car", "dog"}


def test_cached_features_equal_fresh_encoding(tmp_path, tiny_backend):
    path = tmp_path / "t.safetensors"
    TextCache(tiny_backend.fingerprint, path).get(["red bus"], tiny_backend.encode_text)
    feats, mask = TextCache(tiny_backend.fingerprint, path).get(["red bus"])
    fresh, fresh_mask = tiny_backend.encode_text(["red bus"])
    torch.testing.assert_close(feats, fresh)
    assert torch.equal(mask, fresh_mask)


def test_cache_of_another_model_is_refused(tmp_path, tiny_backend):
    path = tmp_path / "t.safetensors"
    TextCache(tiny_backend.fingerprint, path).get(["car"], tiny_backend.encode_text)
    before = path.read_bytes()
    with pytest.raises(CacheError, match="built for model .* not for this model"):
        TextCache("0123456789abcdef", path)
    assert path.read_bytes() == before


def test_corrupt_cache_is_refused(tmp_path, tiny_backend):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CacheError, match="corrupt"):
        TextCache(tiny_backend.fingerprint, path)


def test_missing_class_without_encoder_is_a_sentence(tiny_backend):
    with pytest.raises(CacheError, match="not in the text cache"):
        TextCache(tiny_backend.fingerprint).get(["car"], None)


def test_detector_uses_cache_file(tmp_path, tiny_backend, monkeypatch):
    path = tmp_path / "t.safetensors"
    Detector(tiny_backend, ["person", "car"], text_cache=path)
    calls = []
    monkeypatch.setattr(tiny_backend, "encode_text", lambda names: calls.append(names))
    det = Detector(tiny_backend, ["car", "person"], text_cache=path)
    assert calls == [] and det.classes == ["car", "person"]


def test_text_cache_command_builds_extends_and_shows(tmp_path, tiny_ckpt, tiny_backend):
    """`dart text-cache build` stores exactly what the text encoder gives for each prompt; a second build only
    encodes the new ones; `show` lists them without a model."""
    from typer.testing import CliRunner

    from dart.cli import build_app
    from dart.text_cache import read_cache_info

    runner, path = CliRunner(), tmp_path / "text.safetensors"
    base = ["text-cache", "build", "-o", str(path), "--checkpoint", str(tiny_ckpt), "--device", "cpu", "-c"]
    res = runner.invoke(build_app(), [*base, "vehicle=car|truck", "person"])
    assert res.exit_code == 0, res.output
    assert "3 new, 0 already there" in res.output
    info = read_cache_info(path)
    assert info["classes"] == ["car", "truck", "person"] and info["fingerprint"] == tiny_backend.fingerprint
    features, mask = tiny_backend.encode_text(["car", "truck", "person"])
    cached = TextCache(tiny_backend.fingerprint, path).get(["car", "truck", "person"])
    torch.testing.assert_close(cached[0], features)
    assert torch.equal(cached[1], mask)
    res = runner.invoke(build_app(), [*base, "person", "dog"])
    assert res.exit_code == 0 and "1 new, 1 already there" in res.output
    res = runner.invoke(build_app(), ["text-cache", "show", str(path)])
    assert res.exit_code == 0 and all(n in res.output for n in ("car", "truck", "person", "dog"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a cache")
    res = runner.invoke(build_app(), ["text-cache", "show", str(tmp_path / "junk.safetensors")])
    assert res.exit_code == 2 and "not a dart text cache" in res.output
    res = runner.invoke(build_app(), ["text-cache", "show", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "does not exist" in res.output
