"""Request decoding and response encoding, written once for every front door.

Decoders turn what a client sends into numpy arrays; encoders turn model outputs into what a
client receives. Nothing here checks shapes or values against a model (that is
`ebgen.serve.validation`) and nothing runs a model (that is `ebgen.serve.service`).

Accepted inputs: PNG/JPEG bytes (pillow), `.npy` bytes (no pickles), base64 PNG/JPEG strings
(optionally a `data:image/png;base64,` URL) and JSON tensors (nested lists). Images come back as
uint8 C×H×W arrays; `.npy` and JSON tensors keep their own dtype (uint8 = pixels in [0, 255],
floats = the model range [-1, 1]). Every pixel-range change goes through `ebgen.pixels`.

    >>> png = encode_png(np.zeros((1, 8, 8), np.uint8))
    >>> decode_payload(png).shape
    (1, 8, 8)
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
import zlib
from typing import Any

import numpy as np
from PIL import Image

from ebgen.errors import one_line
from ebgen.images import tile_images, to_pil
from ebgen.pixels import unit_to_uint8

from .validation import Limits, RequestError, check_body_size

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_MAGIC = b"\x93NUMPY"
#: Pillow modes decoded as one grey channel; every other mode becomes RGB.
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: Largest image (in pixels) pillow may decode; a decompression bomb is a 413.
MAX_IMAGE_PIXELS = 4096 * 4096


def sniff(data: bytes) -> str:
    """What a byte payload is: "png", "jpeg", "npy", "json" or "unknown"."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(NPY_MAGIC):
        return "npy"
    if data.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "unknown"


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG/JPEG bytes as a uint8 C×H×W array: one channel for grey modes, else three (RGB).

    With `size` (H, W), the model's, an image of another size is refused from its header,
    before any pixel is decoded (a small file can hold a huge image).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise RequestError(413, f"image of {w}x{h} px is too large to decode")
            if size is not None and (h, w) != tuple(size):
                raise RequestError(422, f"image of {w}x{h} px: this model takes "
                                        f"{size[1]}x{size[0]} px images")
            img.load()
            mode = "L" if img.mode in GREY_MODES else "RGB"
            if img.mode in ("I", "I;16", "F"):  # 16-bit or float grey: scale to 8 bits
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if arr.max(initial=0) > 255 else 255.0
                arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
            else:
                arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(413, "image is too large to decode") from None
    except Exception as err:  # pillow raises many kinds for damaged files
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", one_line(err))
        raise RequestError(400, f"corrupt or unsupported image: {reason}") from None
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


#: The header numpy itself writes for a C-ordered array (any other goes through np.load).
_NPY_HEADER = re.compile(rb"\{'descr': '([<|][uif][1248])', 'fortran_order': False, "
                         rb"'shape': \(((?:\d+, ?)*\d*)\), \} *\n")


def _decode_npy_fast(data: bytes) -> np.ndarray | None:
    """The array of a plain numeric .npy (numpy's own header, version 1–3), read without
    np.load's header evaluation, which costs more than the rest of a small request; None
    for anything else (which np.load then reads, or refuses)."""
    if len(data) < 10 or data[6] not in (1, 2, 3):
        return None
    size = 2 if data[6] == 1 else 4
    start = 8 + size
    end = start + int.from_bytes(data[8:start], "little")
    match = _NPY_HEADER.fullmatch(data[start:end])
    if match is None:
        return None
    dtype = np.dtype(match[1].decode())
    shape = tuple(int(d) for d in match[2].split(b",") if d.strip())
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - end != count * dtype.itemsize:
        return None  # truncated or padded: np.load says what is wrong
    return np.frombuffer(data, dtype, count, end).reshape(shape)


def decode_npy(data: bytes) -> np.ndarray:
    """`.npy` bytes as an array (uint8, integer or float; object arrays are refused)."""
    fast = _decode_npy_fast(data)
    if fast is not None:
        return fast
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:
        raise RequestError(400, f"corrupt .npy payload: {one_line(err)}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uif":
        raise RequestError(422, f".npy payload has dtype {getattr(arr, 'dtype', '?')}, "
                                "expected uint8 pixels or floats in [-1, 1]")
    return arr


def decode_base64_image(text: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A base64 PNG/JPEG string (plain or a `data:image/...;base64,` URL) as uint8 C×H×W."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    text = re.sub(r"[ \t\r\n]+", "", text)  # line-wrapped base64 (MIME, `base64` CLI)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f"invalid base64 image: {one_line(err)}") from None
    if sniff(raw) not in ("png", "jpeg"):
        raise RequestError(400, "base64 string does not hold a PNG or JPEG image")
    return decode_image(raw, size)


def decode_json_tensor(value: Any, dtype: str = "float32") -> np.ndarray:
    """A nested list of numbers as an array; `dtype` "uint8" reads 0–255 pixels."""
    if dtype not in ("float32", "uint8"):
        raise RequestError(422, f"unknown dtype {dtype!r}: expected float32 or uint8")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as err:
        raise RequestError(422, f"JSON tensor is not a rectangular array of numbers: "
                                f"{one_line(err)}") from None
    if dtype == "uint8":
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255
                         or np.any(arr != np.rint(arr))):
            raise RequestError(422, "uint8 JSON tensor must hold integers in [0, 255]")
        return arr.astype(np.uint8)
    return arr.astype(np.float32)


def decode_payload(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """One binary body (PNG, JPEG or `.npy`), sniffed by its magic bytes; images must be
    `size` (H, W) when it is given."""
    kind = sniff(data)
    if kind in ("png", "jpeg"):
        return decode_image(data, size)
    if kind == "npy":
        return decode_npy(data)
    if kind == "json":
        raise RequestError(400, "JSON body sent as a binary payload: set Content-Type: "
                                "application/json")
    if not data:
        raise RequestError(400, "empty body: send a PNG, JPEG, .npy or JSON payload")
    raise RequestError(400, "unrecognised payload: expected PNG, JPEG, .npy or JSON "
                            f"(first bytes {data[:8]!r})")


def parse_json(body: bytes | str) -> Any:
    """A JSON body parsed; malformed JSON (or NaN/Infinity literals) is a 400."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(body, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"malformed JSON: {one_line(err)}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


# ----------------------------------------------------------------------------------- encoders

def encode_png(image: np.ndarray) -> bytes:
    """One uint8 C×H×W image (or a float one in [-1, 1]) as PNG bytes."""
    if image.dtype != np.uint8:
        image = unit_to_uint8(image)
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue()


def encode_grid(images: np.ndarray, nrow: int | None = None) -> bytes:
    """N×C×H×W images (uint8, or floats in [-1, 1]) as one PNG grid."""
    if images.dtype != np.uint8:
        images = unit_to_uint8(images)
    return encode_png(tile_images(images, nrow))


def encode_npy(array: np.ndarray) -> bytes:
    """An array as `.npy` bytes (format 1.0, as np.save writes it, without its overhead)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind not in "uif" or array.dtype.byteorder == ">":
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {array.shape!r}, }}"
    header += " " * (-(len(NPY_MAGIC) + 4 + len(header) + 1) % 64) + "\n"
    return (NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1")
            + array.tobytes())


def b64(data: bytes) -> str:
    """Bytes as an ASCII base64 string."""
    return base64.b64encode(data).decode("ascii")


def encode_json_images(images: np.ndarray, grid: bool = False) -> dict[str, Any]:
    """N×C×H×W images as JSON-ready base64 PNGs: {"images": [...]} (+ "grid" when asked)."""
    pixels = images if images.dtype == np.uint8 else unit_to_uint8(images)
    out: dict[str, Any] = {"images": [b64(encode_png(p)) for p in pixels]}
    if grid:
        out["grid"] = b64(encode_png(tile_images(pixels)))
    return out


def inflate(body: bytes, encoding: str | None, limits: Limits) -> bytes:
    """`body` decompressed per its Content-Encoding (gzip, deflate or none), never past the
    body cap (413), so a small bomb cannot expand without bound."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestError(415, f"Content-Encoding {encoding[:20]!r} is not supported: "
                                f"expected gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limits.max_body_bytes + 1)
    except zlib.error as err:
        raise RequestError(400, f"body is not valid {encoding}: {one_line(err)}") from None
    check_body_size(len(out), limits)
    return out


def dumps(obj: Any) -> bytes:
    """Compact one-line JSON bytes (NaN is refused: it is not JSON)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
