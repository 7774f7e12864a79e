"""The TorchServe handlers without a server: called through `handle()` with a mock context, as
TorchServe calls them; each request of a batch gets its own answer."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from ebgen.serve import codecs, service
from ebgen.serve.validation import Limits, RequestError


class MockContext:
    """What TorchServe hands a handler: properties, manifest, per-request response fields."""

    def __init__(self, model_dir, n: int = 0):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"modelName": "test"}}
        self.metrics = type("M", (), {"add_time": lambda *a, **k: None})()
        self.status, self.types, self.headers = {}, {}, {}
        self.request_processor = [None] * n

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.types[idx] = value

    def set_response_header(self, idx, key, value):
        self.headers.setdefault(idx, {})[key] = value

    def get_request_header(self, idx, key):
        return None


def test_handlers_answer_each_request_of_a_batch(tiny_model_dir, model):
    pytest.importorskip("ts")
    from ebgen.serve.ts_generate import EbgenGenerate
    from ebgen.serve.ts_score import EbgenScore

    gen = EbgenGenerate()
    gen.initialize(MockContext(tiny_model_dir))
    rows = [{"body": bytearray(b'{"num_samples": 2, "seed": 3, "format": "npy"}')},
            {"body": {"num_samples": 10**6}},           # TorchServe-parsed JSON
            {"body": None},                              # no body: defaults
            {}]                                          # a form post: no body at all
    ctx = MockContext(tiny_model_dir, len(rows))
    out = gen.handle(rows, ctx)
    assert len(out) == 4 and ctx.status == {1: 422, 3: 400}
    np.testing.assert_array_equal(np.load(io.BytesIO(out[0])), model.generate(2, 3))
    assert ctx.types[0] == service.NPY_TYPE and ctx.headers[0]["X-Seed"] == "3"
    assert "exceeds" in json.loads(out[1])["error"] and ctx.types[2] == "image/png"

    score = EbgenScore()
    score.initialize(MockContext(tiny_model_dir))
    x = model.generate(2, 4)
    rows = [{"body": codecs.encode_npy(x)}, {"data": b"\x89PNG\r\n\x1a\n broken"},
            {"body": json.dumps({"instances": [x[0].tolist()]}).encode()}]
    ctx = MockContext(tiny_model_dir, len(rows))
    out = score.handle(rows, ctx)
    assert len(out) == 3 and ctx.status == {1: 400}
    np.testing.assert_allclose(json.loads(out[0])["energy"], model.energy(x), rtol=1e-6)
    np.testing.assert_allclose(json.loads(out[2])["energy"], model.energy(x[:1]), rtol=1e-6)


def test_an_unforeseen_failure_of_one_request_stays_its_own(tiny_model_dir, model, monkeypatch):
    """One request whose check or encoding raises something unforeseen gets its own 400/500;
    its batch neighbours are answered (TorchServe used to fail the whole batch with 503)."""
    pytest.importorskip("ts")
    from ebgen.serve.ts_generate import EbgenGenerate

    gen = EbgenGenerate()
    gen.initialize(MockContext(tiny_model_dir))
    real_check = gen.check

    def check(body):
        if body.get("seed") == 13:
            raise ZeroDivisionError("a bug only this request meets")
        return real_check(body)

    monkeypatch.setattr(gen, "check", check)
    rows = [{"body": {"num_samples": 1, "seed": s, "format": "npy"}} for s in (1, 13, 2)]
    rows.append({"body": {"seed": "²"}})
    ctx = MockContext(tiny_model_dir, len(rows))
    out = gen.handle(rows, ctx)
    assert ctx.status == {1: 400, 3: 422}
    assert "ZeroDivisionError" in json.loads(out[1])["error"]
    for idx, seed in ((0, 1), (2, 2)):
        np.testing.assert_array_equal(np.load(io.BytesIO(out[idx])), model.generate(1, seed))

    real_encode = service.encode_generate
    monkeypatch.setattr(gen, "check", real_check)
    monkeypatch.setattr(service, "encode_generate", lambda m, p, x: (
        real_encode(m, p, x) if p.seed != 13 else (_ for _ in ()).throw(MemoryError())))
    ctx = MockContext(tiny_model_dir, 3)
    out = gen.handle(rows[:3], ctx)
    assert ctx.status == {1: 500} and "MemoryError" in json.loads(out[1])["error"]
    np.testing.assert_array_equal(np.load(io.BytesIO(out[2])), model.generate(1, 2))


def test_an_image_of_the_wrong_size_is_refused_from_its_header(tiny_model_dir, monkeypatch):
    """A 1024×1024 16-bit PNG of a few KB is refused for an 8×8 model before decoding."""
    from PIL import ImageFile

    from ebgen import load_model

    big = io.BytesIO()
    Image.new("I;16", (1024, 1024)).save(big, format="PNG")
    model = load_model(tiny_model_dir, device="cpu")

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for body in (big.getvalue(), {"instances": [codecs.base64.b64encode(big.getvalue())
                                                .decode()]}):
        with pytest.raises(RequestError) as err:
            service.decode_score_request(body, model, Limits())
        assert err.value.status == 422 and "8x8" in str(err.value)
