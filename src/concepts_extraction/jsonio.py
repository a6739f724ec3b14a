"""Strict JSON files that keep file names which are not valid UTF-8."""

import json
import os
from pathlib import Path
from typing import Any


def dumps(data: Any) -> bytes:
    """Serialises `data` as strict, key-sorted UTF-8 JSON.

    File names that are not valid UTF-8 reach Python as strings with lone
    surrogates (the "surrogateescape" error handler of `os.fsdecode`). They are
    written as JSON escapes such as `\\udcff`, so `json.loads` followed by
    `os.fsencode` gives back the exact bytes of the name.

    Raises:
        ValueError: if `data` contains NaN or infinity.
    """
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", errors="backslashreplace") + b"\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes `data` to `path` atomically, so a killed job leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(dumps(data))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def loads(data: bytes) -> Any:
    """Parses JSON bytes written by `dumps`."""
    return json.loads(data)


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file written by `write_json`."""
    return loads(Path(path).read_bytes())
