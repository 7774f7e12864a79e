"""Request decoding and response encoding (`ebgen.serve.codecs`) and the request checks
(`ebgen.serve.validation`): every accepted form decodes alike, bad input is a RequestError."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from ebgen.pixels import unit_to_uint8
from ebgen.serve import codecs
from ebgen.serve.validation import Limits, RequestError, check_generate, check_samples


def test_png_jpeg_npy_base64_json_decode():
    img = (np.arange(64, dtype=np.uint8) * 3).reshape(1, 8, 8)
    assert codecs.sniff(codecs.encode_png(img)) == "png"
    np.testing.assert_array_equal(codecs.decode_payload(codecs.encode_png(img)), img)
    rgb = np.stack([img[0], img[0] // 2, 255 - img[0]])
    np.testing.assert_array_equal(codecs.decode_payload(codecs.encode_png(rgb)), rgb)
    buf = io.BytesIO()
    Image.fromarray(img[0], "L").save(buf, format="JPEG", quality=95)
    jpeg = codecs.decode_payload(buf.getvalue())
    assert jpeg.shape == (1, 8, 8) and np.abs(jpeg.astype(int) - img).max() < 20
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(codecs.decode_payload(codecs.encode_npy(x)), x)
    b64 = codecs.b64(codecs.encode_png(img))
    for text in (b64, "data:image/png;base64," + b64):
        np.testing.assert_array_equal(codecs.decode_base64_image(text), img)
    assert codecs.decode_json_tensor(img.tolist(), "uint8").dtype == np.uint8
    assert codecs.decode_json_tensor(x.tolist()).dtype == np.float32


@pytest.mark.parametrize("call, status", [
    (lambda: codecs.decode_payload(b"\x89PNG\r\n\x1a\n" + b"x" * 30), 400),
    (lambda: codecs.decode_payload(b""), 400),
    (lambda: codecs.decode_payload(b"GIF89a"), 400),
    (lambda: codecs.decode_npy(b"\x93NUMPY\x01\x00garbage"), 400),
    (lambda: codecs.decode_base64_image("not base64!"), 400),
    (lambda: codecs.parse_json(b'{"a": NaN}'), 400),
    (lambda: codecs.decode_json_tensor([[1, 2], [3]]), 422),
    (lambda: codecs.decode_json_tensor([300], "uint8"), 422),
    (lambda: check_generate({"num_samples": 10**6}, Limits()), 422),
    (lambda: check_generate({"num_samples": 0}, Limits()), 422),
    (lambda: check_generate({"seed": "x"}, Limits()), 422),
    (lambda: check_generate({"grid": True, "format": "npy"}, Limits()), 422),
    (lambda: check_generate([], Limits()), 422),
    (lambda: check_samples(np.zeros((2, 3, 8, 8), np.uint8), (1, 8, 8)), 422),
    (lambda: check_samples(np.zeros((1, 1, 9, 8), np.uint8), (1, 8, 8)), 422),
    (lambda: check_samples(np.full((1, 1, 8, 8), np.inf, np.float32), (1, 8, 8)), 422),
    (lambda: check_samples(np.zeros((1, 1, 8, 8), np.int64), (1, 8, 8)), 422),
])


def test_bad_inputs_raise_request_errors(call, status):
    with pytest.raises(RequestError) as info:
        call()
    assert info.value.status == status
    body = info.value.body()
    assert b"\n" not in body and json.loads(body)["error"]


def test_grid_and_json_encoding():
    x = np.random.default_rng(1).uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    grid = codecs.decode_payload(codecs.encode_grid(x))
    assert grid.shape == (1, 2 + 2 * 10, 2 + 3 * 10)      # 3 per row, 2 rows, padding 2
    np.testing.assert_array_equal(grid[:, 2:10, 2:10], unit_to_uint8(x[0]))
    out = codecs.encode_json_images(x, grid=True)
    assert len(out["images"]) == 5 and "grid" in out
    np.testing.assert_array_equal(codecs.decode_base64_image(out["images"][4]), unit_to_uint8(x[4]))


def test_line_wrapped_base64_and_oversized_images():
    import base64
    import textwrap

    from PIL import Image

    from ebgen.serve.codecs import decode_base64_image, decode_image, encode_png

    pixels = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(encode_png(pixels)).decode(), 76))
    np.testing.assert_array_equal(decode_base64_image(wrapped + "\n"), pixels)
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 16  # past pillow's own bomb limit
    header = io.BytesIO()
    Image.new("1", (side, side)).save(header, format="PNG")
    with pytest.raises(RequestError) as err:
        decode_image(header.getvalue())
    assert err.value.status == 413
