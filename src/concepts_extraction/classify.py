"""Classification of a chunk of images: parallel decoding overlapped with inference.

Three stages run at once. A pool of threads decodes images, which runs in
parallel because Pillow releases the GIL while it decodes and resizes. The
calling thread groups the images into batches, and one more thread runs the
network on a batch while the next is decoded. Memory stays bounded, because a
fixed number of decoded images and batches is in flight and the probabilities
go straight into one preallocated array.
"""

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import jsonio
from .decode import DEFAULT_MAX_PIXELS, ImageRejected, load_image
from .labels import NUM_CLASSES
from .models import Classifier

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
# Batches handed to the inference thread and not yet finished: one running and
# one queued, so that the network can start the next batch as soon as it is done.
BATCHES_IN_FLIGHT = 2
NON_FINITE = "the model's output contains NaN or infinity"


@dataclass
class ChunkResult:
    """The probabilities of the classified images of a chunk and the rejected ones."""

    paths: list[str] = field(default_factory=list)
    probabilities: np.ndarray = field(
        default_factory=lambda: np.zeros((0, NUM_CLASSES), dtype=np.float32)
    )
    rejected: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)


def _decode_all(
    files: list[tuple[str, Path]], workers: int, window: int, **options
) -> Iterator[tuple[str, np.ndarray | None, object]]:
    """Decodes files in a thread pool, keeping at most `window` in flight, in order.

    Yields `(path, array, info)` for a decoded image and `(path, None, reason)`
    for a rejected one.
    """

    def decode(file: Path):
        try:
            return load_image(file, **options)
        except ImageRejected as rejected:
            return None, str(rejected)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = deque()
        try:
            for path, file in files:
                pending.append((path, pool.submit(decode, file)))
                if len(pending) >= window:
                    path_done, future = pending.popleft()
                    yield (path_done, *future.result())
            while pending:
                path_done, future = pending.popleft()
                yield (path_done, *future.result())
        finally:
            # On an error downstream, drop the queued work instead of decoding it.
            for _, future in pending:
                future.cancel()


def _batches(decoded: Iterable, batch_size: int, result: ChunkResult) -> Iterator:
    """Groups decoded images into batches and records the rejected ones in `result`."""
    paths, arrays = [], []
    for path, array, info in decoded:
        if array is None:
            result.rejected[path] = info
            continue
        if info.needs_conversion:
            result.converted[path] = info.mode
        paths.append(path)
        arrays.append(array)
        if len(arrays) == batch_size:
            yield paths, np.stack(arrays)
            paths, arrays = [], []
    if arrays:
        yield paths, np.stack(arrays)


class _Collector:
    """Stores each batch's probabilities in one preallocated array, in order.

    Each row is written once, so the chunk's probabilities are never copied or
    held twice. A row that is not finite rejects its image instead.
    """

    def __init__(self, capacity: int, result: ChunkResult):
        self.rows = np.empty((capacity, NUM_CLASSES), dtype=np.float32)
        self.count = 0
        self.result = result

    def add(self, paths: list[str], probabilities: np.ndarray) -> None:
        """Keeps the finite rows of a batch and rejects the others."""
        finite = np.isfinite(probabilities).all(axis=1)
        for path, row, ok in zip(paths, probabilities, finite):
            if ok:
                self.result.paths.append(path)
                self.rows[self.count] = row
                self.count += 1
            else:
                self.result.rejected[path] = NON_FINITE
                self.result.converted.pop(path, None)

    def probabilities(self) -> np.ndarray:
        """Returns the stored rows. Memory is never written past them."""
        return self.rows if self.count == len(self.rows) else self.rows[: self.count]


def classify_files(
    files: list[tuple[str, Path]],
    classifier: Classifier,
    batch_size: int = 64,
    workers: int = 1,
    non_rgb: str = "reject",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ChunkResult:
    """Decodes and classifies images, never stopping for one bad file.

    Decoding runs in `workers` threads and inference in one more thread, so the
    network works on one batch while the next is decoded.

    Args:
        files: pairs of the image's path as reported and the file to read.
        classifier: the loaded network.
        batch_size: images per forward pass.
        workers: decoding threads.
        non_rgb: "reject" or "convert" images without 3 colour channels.
        max_pixels: the largest width times height accepted.

    Returns:
        The probabilities of the classified images in input order, and the
        rejected images with their reasons.
    """
    result = ChunkResult()
    collector = _Collector(len(files), result)
    preprocessing = classifier.preprocessing
    decoded = _decode_all(
        files,
        workers,
        window=batch_size + 2 * workers,
        size=preprocessing.size,
        central_fraction=preprocessing.central_fraction,
        non_rgb=non_rgb,
        max_pixels=max_pixels,
    )

    done = 0
    start = last_log = time.monotonic()
    in_flight: deque[tuple[list[str], Future]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict") as network:
        try:
            for paths, batch in _batches(decoded, batch_size, result):
                in_flight.append((paths, network.submit(classifier.predict, batch)))
                while len(in_flight) >= BATCHES_IN_FLIGHT:
                    paths_done, future = in_flight.popleft()
                    collector.add(paths_done, future.result())
                    done += len(paths_done)

                now = time.monotonic()
                if now - last_log >= LOG_INTERVAL_S:
                    rate = done / (now - start)
                    logger.info(
                        "%d of %d images, %.1f images/s", done, len(files), rate
                    )
                    last_log = now
            while in_flight:
                paths_done, future = in_flight.popleft()
                collector.add(paths_done, future.result())
        finally:
            for _, future in in_flight:
                future.cancel()

    result.probabilities = collector.probabilities()
    elapsed = time.monotonic() - start
    logger.info(
        "Classified %d images, rejected %d, in %.1f s (%.1f images/s)",
        len(result.paths),
        len(result.rejected),
        elapsed,
        len(files) / elapsed if elapsed > 0 else 0.0,
    )
    return result


def save_chunk(path: str | os.PathLike, result: ChunkResult) -> None:
    """Writes a chunk's result as one .npz file, atomically.

    The paths and reasons are stored as JSON bytes, so reading the file never
    needs pickle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "paths": result.paths,
        "rejected": result.rejected,
        "converted": result.converted,
    }
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        np.savez(
            handle,
            probabilities=result.probabilities,
            metadata=np.frombuffer(jsonio.dumps(metadata), dtype=np.uint8),
        )
    os.replace(partial, path)


def load_chunk(path: str | os.PathLike) -> ChunkResult:
    """Reads a chunk's result written by `save_chunk`."""
    with np.load(path, allow_pickle=False) as data:
        probabilities = data["probabilities"]
        metadata = jsonio.loads(data["metadata"].tobytes())
    if len(metadata["paths"]) != len(probabilities):
        raise ValueError(
            f"{path} is inconsistent: {len(metadata['paths'])} paths and "
            f"{len(probabilities)} rows of probabilities. Delete it and rerun."
        )
    return ChunkResult(
        metadata["paths"], probabilities, metadata["rejected"], metadata["converted"]
    )
