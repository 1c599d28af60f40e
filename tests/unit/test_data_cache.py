"""The memory-mapped field cache: contents, reuse, rebuild on change, resume after a kill, bad images."""

from __future__ import annotations

import os
import pickle
from collections import namedtuple

import numpy as np
import pytest
from fixtures.data_factory import write_dataset

from locbench.data import cache as cache_mod
from locbench.data import images as imio
from locbench.data.cache import build_cache, open_cache
from locbench.data.formats import load_table
from locbench.errors import BadInputError, LocbenchError


@pytest.fixture
def table(tmp_path):
    write_dataset(tmp_path / "data", ["1", "2 3", "0", "4", "5", "6", "7"], size=24)
    return load_table(tmp_path / "data")


def _count_reads(monkeypatch) -> list:
    calls = []
    real = imio.read_field_raw

    def counting(paths, *a, **k):
        calls.append(paths)
        return real(paths, *a, **k)

    monkeypatch.setattr(imio, "read_field_raw", counting)
    return calls


def test_cache_holds_resized_unique_stains(table, tmp_path):
    cache = build_cache(table, channels="green", size=16, cache_dir=tmp_path / "c", workers=0)
    assert cache.stains == ("green",) and cache.dtype == np.uint8 and len(cache) == len(table)
    assert cache.array.shape == (7, 1, 16, 16)
    for i in range(len(table)):
        assert np.array_equal(cache.get(i), imio.read_field_raw(table.paths(i), ("green",), 16))
    assert cache.get(0, ("green", "green", "green")).shape == (3, 16, 16)
    for name in ("meta.json", "ids.txt", "pixels.npy", "done.npy", "complete"):
        assert (cache.path / name).is_file()
    assert (cache.path / "ids.txt").read_text().split() == table.ids


def test_second_call_reuses_without_decoding(table, tmp_path, monkeypatch):
    first = build_cache(table, channels="rgby", size=16, cache_dir=tmp_path / "c", workers=0)
    calls = _count_reads(monkeypatch)
    again = build_cache(
        table, channels=["yellow", "red", "green", "blue"], size=16, cache_dir=tmp_path / "c", workers=0
    )
    assert again.path == first.path and calls == []  # the same stain set in another order is the same cache


@pytest.mark.parametrize("change", ["file", "size", "channels"])
def test_any_change_builds_a_new_cache(table, tmp_path, change):
    first = build_cache(table, channels="rgb", size=16, cache_dir=tmp_path / "c", workers=0)
    size, channels = 16, "rgb"
    if change == "file":
        path = table.paths(3)["red"]
        imio.write_image(path, np.full((24, 24), 7, np.uint8))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a distinct mtime even on coarse clocks
    elif change == "size":
        size = 8
    else:
        channels = "rgby"
    second = build_cache(table, channels=channels, size=size, cache_dir=tmp_path / "c", workers=0)
    assert second.path != first.path
    if change == "file":
        assert (second.get(3)[0] == 7).all() and not (first.get(3)[0] == 7).all()


def test_interrupted_build_resumes_and_is_never_used_half_done(table, tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    def kill_after_first_chunk(done: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        build_cache(
            table,
            channels="rgb",
            size=16,
            cache_dir=tmp_path / "c",
            workers=0,
            chunk_size=3,
            on_chunk=kill_after_first_chunk,
        )
    (folder,) = (tmp_path / "c").iterdir()
    assert not (folder / "complete").exists()
    assert np.load(folder / "done.npy").tolist() == [1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(LocbenchError, match="not a finished cache"):
        open_cache(folder)
    calls = _count_reads(monkeypatch)
    cache = build_cache(table, channels="rgb", size=16, cache_dir=tmp_path / "c", workers=0, chunk_size=3)
    assert len(calls) == 4  # only the 4 rows not done before the kill
    for i in range(len(table)):
        assert np.array_equal(cache.get(i), imio.read_field_raw(table.paths(i), ("red", "green", "blue"), 16))


def test_sixteen_bit_source_gives_uint16_cache(tmp_path):
    write_dataset(tmp_path / "d", ["1", "2"], size=20, dtype=np.uint16, ext=".tif")
    table = load_table(tmp_path / "d")
    cache = build_cache(table, channels="rgby", size=10, cache_dir=tmp_path / "c", workers=0)
    assert cache.dtype == np.uint16 and cache.get(1).dtype == np.uint16
    assert cache.get(1).max() > 255


def test_undecodable_images_all_listed_then_skippable(table, tmp_path):
    table.paths(1)["green"].write_bytes(b"")
    table.paths(4)["blue"].write_bytes(b"not an image at all")
    with pytest.raises(BadInputError) as err:
        build_cache(table, channels="rgby", size=16, cache_dir=tmp_path / "c", workers=0)
    msg = str(err.value)
    assert "2 of 7 fields cannot be decoded" in msg
    assert "f001: f001_green.png: file is empty" in msg and "f004: f004_blue.png: cannot be decoded" in msg
    cache = build_cache(table, channels="rgby", size=16, cache_dir=tmp_path / "c", workers=0, skip_bad=True)
    assert set(cache.bad_ids) == {"f001", "f004"}
    assert cache.drop_bad(table).ids == ["f000", "f002", "f003", "f005", "f006"]
    # the bad rows are not decoded again: the green-only mode reads f004 (its blue is broken) fine, though
    assert build_cache(
        table, channels="green", size=16, cache_dir=tmp_path / "c", workers=0, skip_bad=True
    ).bad_ids.keys() == {"f001"}


def test_not_enough_disk_space_is_a_clear_error(table, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: usage(100, 90, 10))
    with pytest.raises(LocbenchError, match="needs .* GB but only"):
        build_cache(table, channels="rgby", size=16, cache_dir=tmp_path / "c", workers=0)


def test_missing_stain_in_dataset(tmp_path):
    write_dataset(tmp_path / "d", ["1"], colors=("red", "green", "blue"))
    with pytest.raises(LocbenchError, match="no yellow stain"):
        build_cache(load_table(tmp_path / "d"), channels="rgby", size=8, cache_dir=tmp_path / "c", workers=0)


def test_default_cache_dir_from_environment(table, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCBENCH_CACHE", str(tmp_path / "env-cache"))
    cache = build_cache(table, channels="green", size=8, workers=0)
    assert cache.path.parent == tmp_path / "env-cache"


def test_cache_pickles_without_its_memory_map(table, tmp_path):
    cache = build_cache(table, channels="rgb", size=8, cache_dir=tmp_path / "c", workers=0)
    _ = cache.get(0)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None and np.array_equal(clone.get(5), cache.get(5))


def test_parallel_build_matches_serial(real_data, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "MIN_FIELDS_FOR_POOL", 0)  # use the process pool even for 12 fields
    table = load_table(real_data / "kaggle2018").subset(range(12))
    par = build_cache(table, channels="rgby", size=32, cache_dir=tmp_path / "p", workers=2, chunk_size=2)
    ser = build_cache(table, channels="rgby", size=32, cache_dir=tmp_path / "s", workers=0)
    assert np.array_equal(np.asarray(par.array), np.asarray(ser.array))


def test_interrupt_inside_a_read_keeps_finished_chunks(table, tmp_path, monkeypatch):
    real = imio.read_field_raw
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 6:  # read 1 probes the pixel type, reads 2-5 are rows 0-3
            raise KeyboardInterrupt  # as a Ctrl-C while decoding row 4
        return real(*a, **k)

    monkeypatch.setattr(imio, "read_field_raw", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_cache(table, channels="green", size=8, cache_dir=tmp_path / "c", workers=0, chunk_size=2)
    (folder,) = (tmp_path / "c").iterdir()
    assert np.load(folder / "done.npy").tolist() == [1, 1, 1, 1, 0, 0, 0]
