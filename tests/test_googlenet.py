"""The GoogLeNet download path, against a SavedModel served on 127.0.0.1."""

import numpy as np
import pytest

from concepts_extraction.googlenet import (
    TFHUB_HANDLE,
    ModelDownloadError,
    archive_url,
    download_googlenet,
)
from concepts_extraction.models import load_classifier

from standin import TABBY


def test_archive_url_tfhub_handle():
    assert archive_url(TFHUB_HANDLE) == f"{TFHUB_HANDLE}?tf-hub-format=compressed"


def test_archive_url_tarball_unchanged():
    url = "http://127.0.0.1:8000/model.tar.gz"
    assert archive_url(url) == url


def test_download_from_local_server(model_server, tmp_path):
    destination = tmp_path / "resources" / "googlenet"

    download_googlenet(f"{model_server}/model.tar.gz", destination)

    assert (destination / "saved_model.pb").is_file()
    classifier = load_classifier("googlenet", destination)
    probabilities = classifier.predict(np.zeros((1, 224, 224, 3), dtype=np.uint8))
    assert probabilities[0].argmax() == TABBY


def test_download_replaces_old_copy(model_server, tmp_path):
    destination = tmp_path / "googlenet"
    destination.mkdir()
    (destination / "stale.txt").write_text("old")

    download_googlenet(f"{model_server}/model.tar.gz", destination)

    assert not (destination / "stale.txt").exists()


def test_download_missing_url_says_what_to_do(model_server, tmp_path):
    destination = tmp_path / "googlenet"

    with pytest.raises(ModelDownloadError) as error:
        download_googlenet(f"{model_server}/absent.tar.gz", destination)

    message = str(error.value)
    assert "404" in message
    assert str(destination) in message
    assert "efficientnet_lite0" in message
    assert not destination.exists()


def test_download_broken_archive(model_server, tmp_path):
    with pytest.raises(ModelDownloadError, match="failed"):
        download_googlenet(f"{model_server}/broken.tar.gz", tmp_path / "googlenet")


def test_download_refused_connection(tmp_path):
    # Port 9 on 127.0.0.1 has no listener here, so the connection is refused.
    with pytest.raises(ModelDownloadError, match="no internet access"):
        download_googlenet("http://127.0.0.1:9/model.tar.gz", tmp_path / "googlenet")


def test_local_folder_handle_copied(standin_googlenet, tmp_path):
    destination = download_googlenet(str(standin_googlenet), tmp_path / "googlenet")

    assert (destination / "saved_model.pb").is_file()


def test_invalid_handle(tmp_path):
    with pytest.raises(ModelDownloadError, match="Received: 'ftp://x'"):
        download_googlenet("ftp://x", tmp_path / "googlenet")
