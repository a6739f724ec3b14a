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

    assert list(images["path"]) == [
        "a.jpg",
        "b.JPG",
        "c.jpeg",
        "d.JpEg",
        "e.png",
        "f.PNG",
    ]
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


def chunk_members(chunked):
    return {chunk: tuple(rows["path"]) for chunk, rows in chunked.groupby("chunk")}


def test_split_chunks_size_limit(tmp_path):
    for index in range(200):
        touch(tmp_path / "big" / f"{index:03d}.jpg")
    touch(tmp_path / "small" / "only.jpg")
    images, _ = find_images(tmp_path)

    chunked = split_chunks(images, chunk_size=30)

    big = chunked[chunked["folder"] == "big"]
    sizes = big.groupby("chunk").size()
    assert sizes.max() <= 30
    assert len(sizes) >= 200 // 30
    assert chunked.loc[chunked["folder"] == "small", "chunk"].nunique() == 1
    assert set(chunked["folder_id"]) == {folder_id("big"), folder_id("small")}
    # Chunks hold consecutive paths.
    assert list(big.sort_values("path")["chunk"]) == list(big["chunk"])


def test_split_chunks_insert_changes_one_chunk(tmp_path):
    for index in range(0, 400, 2):
        touch(tmp_path / "big" / f"{index:03d}.jpg")
    images, _ = find_images(tmp_path)
    before = chunk_members(split_chunks(images, chunk_size=30))

    touch(tmp_path / "big" / "201.jpg")
    images, _ = find_images(tmp_path)
    after = chunk_members(split_chunks(images, chunk_size=30))

    changed = set(after.items()) - set(before.items())
    assert len(changed) <= 2
    assert any("big/201.jpg" in paths for _, paths in changed)


def test_split_chunks_one_per_image(tmp_path):
    for name in ["a.jpg", "b.jpg", "c.jpg"]:
        touch(tmp_path / name)
    images, _ = find_images(tmp_path)

    assert split_chunks(images, chunk_size=1)["chunk"].nunique() == 3


def test_split_chunks_rejects_zero():
    images, _ = find_images(os.path.dirname(__file__))
    with pytest.raises(ValueError, match="chunk_size"):
        split_chunks(images, 0)


def test_folder_id_stable_and_distinct():
    assert folder_id("a/b") == folder_id("a/b")
    assert folder_id("a/b") != folder_id("a/c")
    assert len(folder_id("")) == 12
