import os

import pytest

from concepts_extraction.discover import find_images, folder_id, split_chunks


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_find_images_extensions_any_case(tmp_path):
    for name in ["a.jpg", "b.JPG", "c.jpeg", "d.JpEg", "e.png", "f.PNG"]:
        touch(tmp_path / name)
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "g.gif")

    images, skipped = find_images(tmp_path)

    assert list(images["path"]) == ["a.jpg", "b.JPG", "c.jpeg", "d.JpEg", "e.png", "f.PNG"]
    assert set(skipped["path"]) == {"notes.txt", "g.gif"}


def test_find_images_recursive_sorted(tmp_path):
    for name in ["z/b.jpg", "z/a.jpg", "a/deep/er/x.png", "top.jpg"]:
        touch(tmp_path / name)

    images, _ = find_images(tmp_path)

    assert list(images["path"]) == ["a/deep/er/x.png", "top.jpg", "z/a.jpg", "z/b.jpg"]
    assert list(images["folder"]) == ["a/deep/er", "", "z", "z"]


def test_find_images_skips_hidden(tmp_path):
    touch(tmp_path / "ok.jpg")
    touch(tmp_path / "._ok.jpg")
    touch(tmp_path / ".hidden" / "x.jpg")
    touch(tmp_path / ".DS_Store")

    images, skipped = find_images(tmp_path)

    assert list(images["path"]) == ["ok.jpg"]
    assert dict(zip(skipped["path"], skipped["reason"])) == {
        "._ok.jpg": "hidden file",
        ".DS_Store": "hidden file",
        ".hidden": "hidden folder",
    }


def test_find_images_symlink_loop(tmp_path):
    touch(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "loop")

    images, skipped = find_images(tmp_path)

    assert list(images["path"]) == ["a/x.jpg"]
    assert list(skipped["reason"]) == ["symbolic link to a folder"]


def test_find_images_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="input_dir"):
        find_images(tmp_path / "missing")


def test_split_chunks_balanced(tmp_path):
    for index in range(7):
        touch(tmp_path / "big" / f"{index}.jpg")
    touch(tmp_path / "small" / "only.jpg")
    images, _ = find_images(tmp_path)

    chunked = split_chunks(images, chunk_size=3)

    big = chunked[chunked["folder"] == "big"]
    assert list(big["chunk"]) == [0, 0, 1, 1, 1, 2, 2]
    assert list(chunked[chunked["folder"] == "small"]["chunk"]) == [0]
    assert set(chunked["folder_id"]) == {folder_id("big"), folder_id("small")}


def test_split_chunks_rejects_zero():
    images, _ = find_images(os.path.dirname(__file__))
    with pytest.raises(ValueError, match="chunk_size"):
        split_chunks(images, 0)


def test_folder_id_stable_and_distinct():
    assert folder_id("a/b") == folder_id("a/b")
    assert folder_id("a/b") != folder_id("a/c")
    assert len(folder_id("")) == 12
