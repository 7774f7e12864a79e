"""Codecs, validation, the inference core, the micro-batcher and the TorchServe handlers, without
a server (handlers are called through `handle()` with a mock context, as TorchServe's are)."""
from __future__ import annotations

import asyncio
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from ebgen.pixels import unit_to_uint8
from ebgen.serve import codecs, service
from ebgen.serve.batching import BatchTimer, MicroBatcher, Overloaded
from ebgen.serve.validation import (GenerateParams, Limits, RequestError, check_generate,
                                    check_samples)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from ebgen import load_model

    return load_model(tiny_model_dir, device="cpu")


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


def test_service_generate_formats_match_the_runtime(model):
    x = model.generate(4, seed=7)
    npy = service.generate_response(model, GenerateParams(4, 7, "npy"))
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.body)), x)
    one = service.generate_response(model, GenerateParams(1, 7, "png"))
    np.testing.assert_array_equal(codecs.decode_payload(one.body), model.generate_uint8(1, 7)[0])
    js = json.loads(service.generate_response(model, GenerateParams(4, 7, "json", True)).body)
    assert js["seed"] == 7 and js["shape"] == [4, 1, 8, 8] and "grid" in js
    np.testing.assert_array_equal(codecs.decode_base64_image(js["images"][3]), unit_to_uint8(x[3]))
    assert service.generate_response(model, {"num_samples": 2}).headers["X-Seed"] == "0"


def test_service_score_forms_agree(model):
    x = model.generate(3, seed=2)
    pixels = unit_to_uint8(x)
    want = model.score(pixels)
    instances = {"instances": [codecs.b64(codecs.encode_png(p)) for p in pixels[:2]]
                 + [pixels[2].tolist()], "dtype": "uint8"}
    for payload in ([codecs.encode_npy(pixels)], [json.dumps(instances).encode()],
                    [codecs.encode_png(p) for p in pixels]):
        got = service.score_response(model, payload)
        np.testing.assert_allclose(got["energy"], want["energy"], rtol=1e-6)
        np.testing.assert_allclose(got["percentile"], want["percentile"], rtol=1e-6)
        np.testing.assert_allclose(got["log_density"], -np.asarray(got["energy"]))


def test_batches_keep_one_answer_per_request(model):
    reqs = [GenerateParams(2, 1, "npy"), RequestError(422, "bad"), GenerateParams(3, 2, "npy")]
    replies = service.generate_batch(model, reqs)
    assert [r.status for r in replies] == [200, 422, 200]
    np.testing.assert_array_equal(np.load(io.BytesIO(replies[2].body)), model.generate(3, 2))
    xs = [model.generate(2, 5), RequestError(400, "corrupt"), model.generate(1, 6)]
    replies = service.score_batch(model, xs)
    assert [r.status for r in replies] == [200, 400, 200]
    np.testing.assert_allclose(json.loads(replies[2].body)["energy"],
                               model.energy(model.generate(1, 6)), rtol=1e-6)


def test_micro_batcher_batches_and_refuses_when_full():
    seen: list[int] = []
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        seen.append(len(items))
        return [RequestError(422, "odd") if i % 2 else i * 10 for i in items]

    async def main():
        b = MicroBatcher(run, max_batch_size=4, max_delay_ms=50, max_queue=4)
        await b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(4)]
        await asyncio.sleep(0.2)          # first batch of 4 taken, stuck on the gate
        more = [asyncio.create_task(b.submit(i)) for i in range(4, 8)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as full:   # 4 waiting: the queue (4) is full
            await b.submit(99)
        gate.set()
        results = await asyncio.gather(*tasks, *more, return_exceptions=True)
        await b.stop()
        return full.value, results

    full, results = asyncio.run(main())
    assert full.status == 503 and full.retry_after >= 1
    assert service.Reply.error(full).headers == {"Retry-After": str(full.retry_after)}
    assert seen == [4, 4]
    assert [r if not isinstance(r, RequestError) else r.status for r in results] == \
        [0, 422, 20, 422, 40, 422, 60, 422]


def test_batch_timer_fits_overhead_and_cost_per_unit():
    timer = BatchTimer()
    for units in [1, 64, 8, 1024, 1, 256, 2, 1024] * 3:
        timer.add(units, 0.01 + 0.002 * units)
    assert timer.overhead == pytest.approx(0.01, rel=1e-3)
    assert timer.per_unit == pytest.approx(0.002, rel=1e-3)
    assert timer.seconds(1000, 2) == pytest.approx(2.02, rel=1e-3)
    single = BatchTimer()
    single.add(100, 0.5)                   # one batch size seen: no fit yet, but no nonsense
    assert 0 < single.seconds(100, 1) <= 0.5 + 1e-9


def test_retry_after_follows_the_work_queued_not_an_average():
    """Issue 15: Retry-After was a stale average of batch times, whatever was queued. Here a
    sample costs 2 ms: a queue of 4 one-sample requests says 1 s, a queue of 4 requests of
    1,000 samples (≈ 8 s of work) says about 8 s, from the same recent history."""
    gate = threading.Event()

    def run(items):
        gate.wait(10)
        return list(items)

    async def main():
        b = MicroBatcher(run, max_batch_size=1, max_delay_ms=0, max_queue=4, cost=len)
        for units in (1, 10, 100, 1000):
            b.timer.add(units, 0.002 * units)
        await b.start()
        blocker = asyncio.create_task(b.submit(np.zeros(1)))
        await asyncio.sleep(0.1)                      # running, stuck on the gate
        small = [asyncio.create_task(b.submit(np.zeros(1))) for _ in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as little:
            await b.submit(np.zeros(1))
        gate.set()
        await asyncio.gather(blocker, *small)
        gate.clear()
        blocker = asyncio.create_task(b.submit(np.zeros(1)))
        await asyncio.sleep(0.1)
        big = [asyncio.create_task(b.submit(np.zeros(1000))) for _ in range(4)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as lot:
            await b.submit(np.zeros(1))
        gate.set()
        await asyncio.gather(blocker, *big)
        await b.stop()
        return little.value.retry_after, lot.value.retry_after

    little, lot = asyncio.run(main())
    assert little == 1
    assert 7 <= lot <= 10


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


def test_a_batcher_whose_task_died_is_restarted_and_answers():
    async def main():
        b = MicroBatcher(lambda items: [i + 1 for i in items], max_batch_size=4)
        await b.start()
        real_collect = b._collect

        async def broken():
            raise RuntimeError("a bug in the collecting loop")

        b._collect = broken
        await asyncio.sleep(0.01)             # the task dies
        dead = not b.alive
        b._collect = real_collect
        answer = await asyncio.wait_for(b.submit(41), 5)   # restarted, not hung
        alive = b.alive
        await b.stop()
        return dead, answer, alive

    dead, answer, alive = asyncio.run(main())
    assert dead and answer == 42 and alive


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


def test_points_models_take_any_finite_coordinates():
    """2-D points live outside [-1, 1] (the ring has radius 1.41): no pixel-range check."""
    points = np.array([[1.41, 0.0], [-2.5, 3.0]], np.float32)
    np.testing.assert_array_equal(check_samples(points, (2,)), points)
    assert check_samples(np.array([1, 2]), (2,)).dtype == np.float32
    with pytest.raises(RequestError) as err:
        check_samples(np.array([[np.nan, 0.0]], np.float32), (2,))
    assert err.value.status == 422


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


def test_outputs_that_overflow_are_the_requests_422():
    from ebgen.serve.validation import check_finite_output

    with pytest.raises(RequestError) as err:
        check_finite_output(np.array([1.0, np.inf], np.float32), "energy")
    assert err.value.status == 422 and "overflows" in str(err.value)


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
