"""Aggregation of chunk results into top-N concepts per image."""

import logging
import os
from typing import Iterable

import numpy as np
import pandas as pd

from .classify import ChunkResult, load_chunk
from .labels import load_labels

logger = logging.getLogger(__name__)


def top_concepts(probabilities: np.ndarray, num_concepts: int) -> list[list[dict]]:
    """Returns the `num_concepts` most probable classes of each row, in order.

    Ties are broken by class index, so the result is deterministic.
    """
    labels = load_labels()
    if not 1 <= num_concepts <= len(labels):
        raise ValueError(
            f"num_concepts must be between 1 and {len(labels)}. "
            f"Received: {num_concepts}"
        )
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :num_concepts]
    wnids, concepts = labels["wnid"].to_numpy(), labels["concept"].to_numpy()
    return [
        [
            {
                "concept": str(concepts[index]),
                "wnid": str(wnids[index]),
                "probability": float(row[index]),
            }
            for index in indices
        ]
        for row, indices in zip(probabilities, order)
    ]


def folder_result(chunks: Iterable[ChunkResult], num_concepts: int) -> dict:
    """Builds the per-folder result: top-N per image, rejected and converted images."""
    images, rejected, converted = {}, {}, {}
    for chunk in chunks:
        images.update(zip(chunk.paths, top_concepts(chunk.probabilities, num_concepts)))
        rejected.update(chunk.rejected)
        converted.update(chunk.converted)
    return {"images": images, "rejected": rejected, "converted": converted}


def folder_result_from_files(
    chunk_files: Iterable[str | os.PathLike], num_concepts: int
) -> dict:
    """Builds the per-folder result from the .npz files of its chunks."""
    return folder_result((load_chunk(path) for path in chunk_files), num_concepts)


def merge_results(
    folder_results: Iterable[dict],
    model: str,
    num_concepts: int,
    skipped: dict[str, int],
) -> dict:
    """Merges per-folder results into the final document, with a summary of counts."""
    merged = {"images": {}, "rejected": {}, "converted": {}}
    for result in folder_results:
        for key in merged:
            merged[key].update(result.get(key, {}))

    summary = {
        "classified": len(merged["images"]),
        "rejected": len(merged["rejected"]),
        "skipped": int(sum(skipped.values())),
        "skipped_by_reason": dict(skipped),
    }
    return {"model": model, "num_concepts": num_concepts, **merged, "summary": summary}


def summary_table(document: dict, rows: int = 10) -> pd.DataFrame:
    """Returns a table of the top concept of the first `rows` images, for display."""
    records = [
        {
            "image": path,
            "concept": concepts[0]["concept"],
            "probability": round(concepts[0]["probability"], 3),
        }
        for path, concepts in sorted(document["images"].items())[:rows]
    ]
    return pd.DataFrame(records, columns=["image", "concept", "probability"])
