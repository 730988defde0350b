"""Weights round-trip through safetensors; corrupt or tampered files are named, not crashed on."""

from __future__ import annotations

import pytest
import torch

from flock_pipeline.errors import SerializationError
from flock_pipeline.serialization import (
    canonical_bytes,
    content_hash,
    read_weights,
    write_weights,
)


def test_weights_round_trip_and_hash_matches_file(tmp_path):
    w = {"b": torch.ones(2, 3), "a": torch.arange(4.0)}
    digest = write_weights(w, tmp_path / "m.safetensors")
    assert digest == content_hash(w)
    back = read_weights(tmp_path / "m.safetensors", expected_hash=digest)
    assert set(back) == {"a", "b"} and all(torch.equal(back[k], w[k]) for k in w)


def test_canonical_bytes_do_not_depend_on_insertion_order():
    a = {"x": torch.zeros(3), "y": torch.ones(1)}
    b = {"y": torch.ones(1), "x": torch.zeros(3)}
    assert canonical_bytes(a) == canonical_bytes(b)


def test_corrupt_file_is_a_named_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(SerializationError, match="not a valid safetensors file"):
        read_weights(path)


def test_truncated_file_is_a_named_error(tmp_path):
    path = tmp_path / "cut.safetensors"
    write_weights({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(SerializationError, match="not a valid safetensors"):
        read_weights(path)


def test_tampered_file_fails_its_hash(tmp_path):
    path = tmp_path / "m.safetensors"
    digest = write_weights({"w": torch.ones(4)}, path)
    write_weights({"w": torch.full((4,), 2.0)}, path)
    with pytest.raises(SerializationError, match="expected"):
        read_weights(path, expected_hash=digest)


def test_missing_file_is_a_named_error(tmp_path):
    with pytest.raises(SerializationError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")
