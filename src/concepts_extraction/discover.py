"""Discovery of the images in a tree of folders, and their split into chunks."""

import hashlib
import os
from pathlib import Path

import pandas as pd

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGE_COLUMNS = ["path", "folder", "size", "mtime_ns"]
SKIPPED_COLUMNS = ["path", "reason"]


def is_image_name(name: str) -> bool:
    """Tells whether a file name has an image extension, in any letter case."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def folder_id(folder: str) -> str:
    """Returns a short, stable id for a folder path relative to the input folder.

    The id names the folder's files under `results/`, so no file or folder name
    from the input tree ever appears in a wildcard or a shell command.
    """
    digest = hashlib.sha1(os.fsencode(folder or "."), usedforsecurity=False)
    return digest.hexdigest()[:12]


def _relative(path: str, root: str) -> str:
    relative = os.path.relpath(path, root)
    return "" if relative == "." else relative.replace(os.sep, "/")


def _points_to_folder(entry: os.DirEntry) -> bool:
    """Tells whether an entry is a symbolic link to a folder, without raising.

    A link that loops back on itself, or whose target cannot be reached, is not
    a link to a folder: it is listed as a file and rejected by validation if it
    has an image's name.
    """
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


def _file_entry(entry: os.DirEntry, root: str) -> tuple[dict | None, dict | None]:
    """Classifies one directory entry as an image row, a skipped row, or neither."""
    relative = _relative(entry.path, root)
    if entry.name.startswith("."):
        return None, {"path": relative, "reason": "hidden file"}
    if not is_image_name(entry.name):
        return None, {"path": relative, "reason": "not a .jpg, .jpeg or .png name"}

    try:
        stat = entry.stat()
    except OSError:
        # A dangling symlink, a symlink loop or an unreadable entry: validation
        # rejects it with the operating system's reason, so it is listed here.
        return {"path": relative, "size": -1, "mtime_ns": -1}, None
    return {"path": relative, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, None


def _scan_folder(folder: str, root: str) -> tuple[list, list, list[str]]:
    """Lists one folder: its images, its skipped entries and its subfolders.

    Raises:
        OSError: if the folder cannot be listed.
    """
    images, skipped, subfolders = [], [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            relative = _relative(entry.path, root)
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    skipped.append({"path": relative, "reason": "hidden folder"})
                else:
                    subfolders.append(entry.path)
            elif _points_to_folder(entry):
                skipped.append(
                    {"path": relative, "reason": "symbolic link to a folder"}
                )
            else:
                image, other = _file_entry(entry, root)
                if image is not None:
                    image["folder"] = _relative(folder, root)
                    images.append(image)
                if other is not None:
                    skipped.append(other)
    return images, skipped, subfolders


def find_images(input_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finds every image under `input_dir`, recursively.

    Images are files named .jpg, .jpeg or .png in any letter case, and
    validation checks their content later. Every other entry is skipped with a
    reason. Skipped entries are hidden files and folders (names starting with a
    dot, such as macOS `._name.jpg` files and `.DS_Store`), symbolic links to
    folders, folders that cannot be listed, and files with other names. A
    hidden folder is one entry and its contents are not read. Links to folders
    are not followed, which keeps loops out. Symbolic links to files are
    followed. An entry with an image extension that is not a readable regular
    file (a broken link, a link loop, a named pipe) is listed as an image, so
    that validation rejects it with the reason.

    Returns:
        A pair of DataFrames. `images` has one row per image with its `path`
        relative to `input_dir` (with / separators), its `folder` (the parent,
        "" for the top) and the `size` and `mtime_ns` that decide reruns, sorted
        by path. `skipped` lists the other entries with a `reason`.

    Raises:
        NotADirectoryError: if `input_dir` is not a folder.
        OSError: if `input_dir` cannot be listed (PermissionError when it is
            not readable).
    """
    root = os.fspath(input_dir)
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"The input folder {root!r} ({os.path.abspath(root)}) does not exist or "
            "is not a folder. Set "
            "input_dir in config/config.yaml (or -p) to a folder of images."
        )

    images, skipped = [], []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            found, other, subfolders = _scan_folder(folder, root)
        except OSError as error:
            if folder == root:
                # OSError with an errno gives the matching subclass, such as
                # PermissionError.
                raise OSError(
                    error.errno,
                    f"The input folder {root!r} cannot be listed: "
                    f"{error.strerror or error}. Check its permissions.",
                ) from error
            reason = f"folder cannot be listed ({error.strerror or error})"
            skipped.append({"path": _relative(folder, root), "reason": reason})
            continue
        images.extend(found)
        skipped.extend(other)
        pending.extend(subfolders)

    images = pd.DataFrame(images, columns=IMAGE_COLUMNS)
    skipped = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    return (
        images.sort_values("path", ignore_index=True),
        skipped.sort_values("path", ignore_index=True),
    )


def _digest(text: str) -> int:
    return int.from_bytes(
        hashlib.sha1(os.fsencode(text), usedforsecurity=False).digest()[:8], "big"
    )


def _chunk_starts(paths: list[str], chunk_size: int) -> list[int]:
    """Returns, for each path, the index of the first path of its chunk.

    A chunk ends before a path whose hash is divisible by `spacing`, or when it
    reaches `chunk_size` paths. The boundaries depend on the names, not on their
    positions, so adding or removing one image changes only the chunk that it
    falls in (and the next one, if that chunk was full).
    """
    spacing = max(1, round(chunk_size * 2 / 3))
    starts, start = [], 0
    for index, path in enumerate(paths):
        is_boundary = _digest(path) % spacing == 0
        if index > start and (index - start == chunk_size or is_boundary):
            start = index
        starts.append(start)
    return starts


def split_chunks(images: pd.DataFrame, chunk_size: int) -> pd.DataFrame:
    """Assigns each image a folder id and a chunk id within its folder.

    Chunks hold consecutive images in path order, at most `chunk_size` of them
    and about half that on average. A chunk's id is a hash of its first path,
    so the ids of unchanged chunks survive when images are added or removed.

    Returns:
        A copy of `images` with the columns `folder_id` and `chunk` added.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1. Received: {chunk_size}")

    chunked = images.copy()
    chunked["folder_id"] = chunked["folder"].map(folder_id)
    chunked["chunk"] = ""
    for _, rows in chunked.groupby("folder", sort=False):
        paths = rows["path"].tolist()
        starts = _chunk_starts(paths, chunk_size)
        ids = [f"{_digest(paths[start]):016x}"[:10] for start in starts]
        chunked.loc[rows.index, "chunk"] = ids
    return chunked


def resolve(input_dir: str | os.PathLike, path: str) -> Path:
    """Returns the file on disk for an image path relative to `input_dir`."""
    return Path(input_dir, *path.split("/"))
