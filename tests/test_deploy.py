"""deploy/: the Kubernetes and KServe manifests, validated and checked against the image.

Every Kubernetes object is validated strictly (unknown fields are errors) against the
Kubernetes schemas `kubernetes-validate` ships. The KServe InferenceService's pod part (its
containers, probes, resources) is validated the same way as a Pod; its KServe fields against
the fields of KServe's v1beta1 predictor. Then each manifest's container command and
environment are run for real: the probe paths, the metrics path and the port they name must be
what that server answers, and the command the Dockerfile's own CMD.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, stop_process, wait_until

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"
#: KServe v1beta1: the predictor's own fields (ComponentExtensionSpec and PredictorSpec's
#: framework specs); the rest of a predictor is an inline Kubernetes PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
    "annotations", "deploymentStrategy", "autoScaling", "model", "workerSpec", "sklearn",
    "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm",
    "paddle"}
KSERVE_SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}
pytestmark = pytest.mark.skipif(not DEPLOY.is_dir(), reason="needs the source checkout")


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _pods() -> list[tuple[str, dict]]:
    """(manifest, pod spec) of every pod the manifests run."""
    pods = [("kubernetes/ebgen.yaml", d["spec"]["template"]["spec"])
            for d in _documents("kubernetes/ebgen.yaml") if d["kind"] == "Deployment"]
    for d in _documents("kserve/inferenceservice.yaml"):
        predictor = d["spec"]["predictor"]
        pods.append(("kserve/inferenceservice.yaml",
                     {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}))
    return pods


def test_kubernetes_objects_are_valid():
    documents = _documents("kubernetes/ebgen.yaml")
    assert [d["kind"] for d in documents] == ["Deployment", "Service",
                                              "HorizontalPodAutoscaler"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    deployment, service, autoscaler = documents
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_a_broken_manifest_is_caught():
    """The validator is strict: a misspelt field and a wrong type both fail."""
    deployment = _documents("kubernetes/ebgen.yaml")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    container["readinessProbe"] = container.pop("readinessProbes")
    container["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kserve_inference_service_is_valid():
    (service,) = _documents("kserve/inferenceservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1",
                                                        "InferenceService")
    assert set(service["spec"]) == {"predictor"}
    predictor = service["spec"]["predictor"]
    assert predictor["scaleMetric"] in KSERVE_SCALE_METRICS
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert isinstance(predictor["scaleTarget"], int) and predictor["scaleTarget"] > 0
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe gives its predictor
    pod = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": service["metadata"]["name"]},
                                  "spec": pod}, KUBERNETES_VERSION, strict=True)


def _dockerfile_cmd() -> list[str]:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            return json.loads(line[4:])
    raise AssertionError("the Dockerfile has no CMD")


def _variables_ebgen_reads() -> set[str]:
    """The environment variables of `ebgen serve`'s options, plus the serving threads'."""
    from ebgen.cli.serve import serve_command
    from ebgen.sessions import THREADS_ENV

    names = {p.envvar for p in serve_command.params if isinstance(p.envvar, str)}
    return names | {THREADS_ENV}


def _environment(container: dict, limits_cpu: str) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:  # the one downward-API value the manifests use
            ref = item["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu" and ref["containerName"] == container["name"]
            env[item["name"]] = limits_cpu
    return env


@pytest.mark.slow
@pytest.mark.parametrize("manifest", ["kubernetes/ebgen.yaml", "kserve/inferenceservice.yaml"])
def test_the_manifests_command_serves_their_ports_and_probe_paths(manifest, tmp_path):
    ((_, pod),) = [p for p in _pods() if p[0] == manifest]
    (container,) = pod["containers"]
    command = container["command"]
    assert command == _dockerfile_cmd()  # what the image runs by itself
    env = _environment(container, str(container["resources"]["limits"]["cpu"]))
    assert set(env) <= _variables_ebgen_reads(), set(env) - _variables_ebgen_reads()
    assert env["EBGEN_THREADS"] == "2"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    manifest_port = command[command.index("--port") + 1]
    assert set(ports.values()) == {int(manifest_port)}
    probes = [container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")]
    for probe in probes:
        assert ports.get(probe["port"], probe["port"]) == int(manifest_port)
    paths = [p["path"] for p in probes] + ["/metrics"]
    port = free_port()  # the manifest's command and environment, on a free local port
    args = [*command[2:]]
    args[args.index("--port") + 1], args[args.index("--host") + 1] = str(port), "127.0.0.1"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ebgen.cli.main", *command[1:2], *args],
                                env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(url + paths[0], timeout=2).status_code == 200, 90)
            for path in paths:
                assert httpx.get(url + path, timeout=10).status_code == 200, path
            model = httpx.get(url + "/v2/models/energy", timeout=10).json()
            assert model["inputs"][0]["shape"][1:] == [1, 28, 28]  # EBGEN_MODEL=mnist
        finally:
            stop_process(proc)
