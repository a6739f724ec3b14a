"""Convert the packaged EfficientNet-Lite0 checkpoint to a Keras model, once."""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))

# TensorFlow's C++ libraries write to file descriptor 2, so redirect it too.
sys.stderr = open(
    snakemake.log[0], "w", buffering=1, encoding="utf-8", errors="backslashreplace"
)
os.dup2(sys.stderr.fileno(), 2)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")

from concepts_extraction.efficientnet import convert_efficientnet_lite0
from concepts_extraction.models import packaged_checkpoint

convert_efficientnet_lite0(packaged_checkpoint(), snakemake.output[0])
