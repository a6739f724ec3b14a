"""Shared fixtures: real photos, real models and a real HTTP server on 127.0.0.1."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from concepts_extraction.efficientnet import convert_efficientnet_lite0
from concepts_extraction.models import packaged_checkpoint

from standin import archive_standin, save_standin

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO / "example" / "photos"


@pytest.fixture(scope="session")
def efficientnet_model(tmp_path_factory) -> Path:
    """The real EfficientNet-Lite0 weights, converted once per test session."""
    path = tmp_path_factory.mktemp("efficientnet") / "efficientnet_lite0.keras"
    convert_efficientnet_lite0(packaged_checkpoint(), path)
    return path


@pytest.fixture(scope="session")
def standin_googlenet(tmp_path_factory) -> Path:
    """A SavedModel folder with GoogLeNet's TF-Hub signature."""
    return save_standin(tmp_path_factory.mktemp("standin") / "googlenet")


@pytest.fixture(scope="session")
def model_server(tmp_path_factory, standin_googlenet):
    """Serves the stand-in model as model.tar.gz on 127.0.0.1; yields the base URL."""
    root = tmp_path_factory.mktemp("served")
    archive_standin(standin_googlenet, root / "model.tar.gz")
    (root / "broken.tar.gz").write_bytes(b"this is not a gzip archive")

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def photo_tree(tmp_path) -> Path:
    """A copy of the bundled example photos in a temporary folder."""
    tree = tmp_path / "photos"
    shutil.copytree(PHOTOS, tree)
    return tree
