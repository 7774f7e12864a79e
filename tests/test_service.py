"""The inference core shared by both engines (`ebgen.serve.service`): generate and score answers
match the runtime, batches keep one answer per request, outputs are checked."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from ebgen.pixels import unit_to_uint8
from ebgen.serve import codecs, service
from ebgen.serve.validation import GenerateParams, RequestError, check_samples


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


def test_points_models_take_any_finite_coordinates():
    """2-D points live outside [-1, 1] (the ring has radius 1.41): no pixel-range check."""
    points = np.array([[1.41, 0.0], [-2.5, 3.0]], np.float32)
    np.testing.assert_array_equal(check_samples(points, (2,)), points)
    assert check_samples(np.array([1, 2]), (2,)).dtype == np.float32
    with pytest.raises(RequestError) as err:
        check_samples(np.array([[np.nan, 0.0]], np.float32), (2,))
    assert err.value.status == 422


def test_outputs_that_overflow_are_the_requests_422():
    from ebgen.serve.validation import check_finite_output

    with pytest.raises(RequestError) as err:
        check_finite_output(np.array([1.0, np.inf], np.float32), "energy")
    assert err.value.status == 422 and "overflows" in str(err.value)


def test_refined_generation_is_checked_and_needs_latent_potential(model, tiny_model_dir,
                                                                   tmp_path):
    import shutil

    from ebgen import load_model
    from ebgen.serve.validation import Limits, check_generate

    params = check_generate({"num_samples": 3, "seed": 2, "format": "npy", "refine_steps": "4",
                             "refine_step_size": "0.2"}, Limits())
    assert (params.refine_steps, params.refine_step_size) == (4, 0.2)
    assert check_generate({}, Limits()).refine_steps == 0
    for bad in ({"refine_steps": 5}, {"refine_steps": -1}, {"refine_steps": True},
                {"refine_step_size": 11}, {"refine_step_size": float("nan")},
                {"refine_step_size": [1]}, {"refine_step_size": False}):
        with pytest.raises(RequestError) as err:
            check_generate(bad, Limits(max_refine_steps=4))
        assert err.value.status == 422 and "refine_step" in str(err.value)
    z, _ = model.refine(model.latents(3, 2), steps=4, step_size=0.2, seed=2)
    reply = service.generate_batch(model, [params])[0]
    np.testing.assert_allclose(np.load(io.BytesIO(reply.body)), model.generate_from_latents(z),
                               atol=1e-6)
    old = tmp_path / "old"  # exported before latent_potential.onnx existed
    shutil.copytree(tiny_model_dir, old)
    (old / "latent_potential.onnx").unlink()
    info = json.loads((old / "model.json").read_text())
    del info["onnx"]["latent_potential"]
    (old / "model.json").write_text(json.dumps(info))
    replies = service.generate_batch(load_model(old, "cpu"),
                                     [params, GenerateParams(num_samples=2)])
    assert replies[0].status == 422 and b"latent_potential.onnx" in replies[0].body
    assert replies[1].status == 200  # its batch neighbour is answered
