"""Convert the packaged EfficientNet-Lite0 checkpoint to a Keras model, once."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from concepts_extraction.efficientnet import convert_efficientnet_lite0
from concepts_extraction.models import packaged_checkpoint

convert_efficientnet_lite0(packaged_checkpoint(), snakemake.output[0])
