"""Issue 13, large inputs (cases 7 and 8): a CSV of many rows whose images do not exist, and an image file whose
header promises a huge picture, are refused fast and in bounded memory, naming the offender, changing nothing."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from fixtures.cli import run_cli

pytest_plugins = ["fixtures.synth_data"]
REPO = Path(__file__).resolve().parents[2]


def write_constant_png(path: Path, width: int, height: int, rows_per_block: int = 1000) -> None:
    """A valid 8-bit gray PNG of one value, made without holding the image: one block of rows is compressed with a
    full flush (which makes it independent of what came before) and repeated; the checksum is run over the rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    block = (b"\x00" + b"\x07" * width) * rows_per_block  # filter byte 0, then the row
    comp = zlib.compressobj(6)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again  # after the 2-byte zlib header the blocks are the same bytes
    adler = 1
    for _ in range(height // rows_per_block):
        adler = zlib.adler32(block, adler)
    stream = first[:2] + again * (height // rows_per_block) + b"\x03\x00" + struct.pack(">I", adler)  # empty final
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def test_a_huge_png_is_refused_from_its_header_in_little_memory(dataset, kit, tmp_path, capsys, untouched):
    big = sorted((dataset / "train").glob("*_green.png"))[0]
    write_constant_png(big, 30000, 30000)
    assert big.stat().st_size < 1_100_000  # under 1 MB on disk, 0.9 GB decoded
    untouched.watch(dataset)
    # the reader alone, in a fresh process: its peak memory stays far from the 0.9 GB the pixels would take
    code = f"from locbench.data.images import read_image\nread_image({str(big)!r})"
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1 and "ImageReadError" in proc.stderr and "30000 x 30000" in proc.stderr
    assert int(proc.stderr.rsplit("MAXRSS_KB=", 1)[1].split()[0]) < 300 * 1024
    # the command: exit 2, the file, its size, the limit and how to raise it
    out = tmp_path / "run"
    code, err = run_cli(capsys, ["train", "--out", str(out), *kit.set_args(kit.overrides(dataset))])
    assert code == 2 and big.name in err and "30000 x 30000" in err and "100,000,000" in err, err
    assert "LOCBENCH_MAX_PIXELS" in err
    untouched.check()


def test_many_rows_without_images_are_refused_in_seconds(tmp_path, capsys, untouched):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train.csv").write_text("ID,Label\n" + "".join(f"field-{k:06d},{k % 19}|3\n" for k in range(100_000)))
    untouched.watch(data)
    start = time.perf_counter()
    code, err = run_cli(capsys, ["data", "info", str(data)])
    assert time.perf_counter() - start < 20  # about 1 s alone; the 1e6-row figures are in docs/RELIABILITY.md
    assert code == 2 and "100,000 of 100,000 rows cannot be used" in err
    assert str(data / "train" / "field-000000_red.png") in err and "line 2, id 'field-000000'" in err
    assert "'{id}_{channel}{ext}'" in err and "data.pattern" in err and "--pattern" in err
    fix = err.split("Fix:", 1)[1]
    assert "image files" in fix and "label" not in fix
    untouched.check()
