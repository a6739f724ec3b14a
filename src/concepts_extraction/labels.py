"""The 1000 ILSVRC-2012 classes: index, WordNet id and concept name."""

from functools import lru_cache
from importlib import resources

import pandas as pd

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def load_labels() -> pd.DataFrame:
    """Loads the ILSVRC-2012 classes shipped with the package.

    Returns:
        A DataFrame indexed by class index (0 to 999) with the columns `wnid`
        and `concept`, in the standard order of sorted WordNet ids.
    """
    path = resources.files("concepts_extraction") / "data" / "imagenet_classes.tsv"
    with path.open("r", encoding="utf-8") as handle:
        labels = pd.read_csv(handle, sep="\t", comment="#", index_col="index")

    if len(labels) != NUM_CLASSES or list(labels.index) != list(range(NUM_CLASSES)):
        raise ValueError(
            f"The label file {path} must list classes 0 to {NUM_CLASSES - 1} in "
            f"order. Received: {len(labels)} rows."
        )
    return labels
