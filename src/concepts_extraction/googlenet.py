"""Download of GoogLeNet (Inception v1) as a TF-Hub SavedModel."""

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

TFHUB_HANDLE = "https://tfhub.dev/google/imagenet/inception_v1/classification/5"
DOWNLOAD_TIMEOUT_S = 60


class ModelDownloadError(RuntimeError):
    """A failed model download. The message gives the steps to install it by hand."""


def archive_url(handle: str) -> str:
    """Returns the URL of the .tar.gz archive behind a model handle.

    A URL that already names a .tar.gz or .tgz file is used as it is. Any other
    http(s) handle is taken to be a TF-Hub handle, which serves the compressed
    SavedModel when asked with `?tf-hub-format=compressed`.
    """
    if handle.split("?")[0].endswith((".tar.gz", ".tgz")):
        return handle
    separator = "&" if "?" in handle else "?"
    return f"{handle}{separator}tf-hub-format=compressed"


def _find_savedmodel(folder: Path) -> Path:
    candidates = sorted(path.parent for path in folder.rglob("saved_model.pb"))
    if not candidates:
        raise ModelDownloadError(
            f"The archive contains no saved_model.pb, so it is not a SavedModel. "
            f"Received files: {sorted(p.name for p in folder.iterdir())[:10]}"
        )
    return min(candidates, key=lambda path: len(path.parts))


def _fetch_archive(url: str, folder: Path) -> None:
    archive = folder / "model.tar.gz"
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        with archive.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    logger.info("Downloaded %.1f MB from %s", archive.stat().st_size / 1e6, url)

    with tarfile.open(archive, mode="r:*") as tar:
        tar.extractall(folder / "extracted", filter="data")
    archive.unlink()


def _failure_message(handle: str, destination: Path, error: Exception) -> str:
    return (
        f"Downloading the GoogLeNet SavedModel from {handle} failed: {error}. If "
        "this machine has no internet access, download that URL on one that has, "
        f"unpack the .tar.gz and copy the folder that contains saved_model.pb to "
        f"{destination} (or set googlenet_handle / --model-handle to that folder), "
        "or choose the model efficientnet_lite0, whose weights ship with the "
        "package."
    )


def download_googlenet(handle: str, destination: str | os.PathLike) -> Path:
    """Fetches a SavedModel into `destination`, replacing it atomically.

    Args:
        handle: an http(s) URL of a TF-Hub model or of a .tar.gz SavedModel
            archive, or a local SavedModel folder, which is copied.
        destination: the folder to create.

    Returns:
        The destination folder, which contains saved_model.pb.

    Raises:
        ModelDownloadError: if the download or the archive fails, with the
            steps to install the model by hand.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        scratch = Path(scratch)
        try:
            if handle.startswith(("http://", "https://")):
                _fetch_archive(archive_url(handle), scratch)
                source = _find_savedmodel(scratch / "extracted")
            elif Path(handle).is_dir():
                source = _find_savedmodel(Path(handle))
            else:
                raise ModelDownloadError(
                    "googlenet_handle must be an http(s) URL or a local SavedModel "
                    f"folder. Received: {handle!r}"
                )
            staged = scratch / "staged"
            shutil.copytree(source, staged)
        except (OSError, urllib.error.URLError, tarfile.TarError) as error:
            raise ModelDownloadError(
                _failure_message(handle, destination, error)
            ) from error

        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staged, destination)
    return destination
