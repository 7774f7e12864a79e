"""Write the first 512 MNIST test images and labels as small gzip IDX files (a test fixture).

Usage: python tests/data/make_mnist_slice.py SOURCE_FOLDER [DEST_FOLDER]
SOURCE_FOLDER holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (the official
MNIST test set); DEST_FOLDER defaults to tests/data/mnist beside this script.
"""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

COUNT = 512


def slice_idx(src: Path, dst: Path, count: int) -> None:
    """Copy the first `count` items of gzip IDX file `src` to `dst`, fixing the header."""
    raw = gzip.decompress(src.read_bytes())
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    item = 1
    for d in dims[1:]:
        item *= d
    header = raw[:4] + struct.pack(f">{ndim}I", count, *dims[1:])
    body = raw[4 + 4 * ndim:4 + 4 * ndim + count * item]
    # mtime=0 keeps the output byte-identical from run to run.
    dst.write_bytes(gzip.compress(header + body, compresslevel=9, mtime=0))


def main() -> None:
    src = Path(sys.argv[1])
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "mnist"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        slice_idx(src / name, dst / name, COUNT)


if __name__ == "__main__":
    main()
