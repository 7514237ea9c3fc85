"""deploy/: the Helm chart renders valid Kubernetes objects that fit together, the Dockerfile and the
build script lint clean, and the FlytePropeller snippets route every plugin's task types to the chart's
Service. Uses the real helm, hadolint, shellcheck and Kubernetes' schemas that bootstrap installs."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "flyteagents"
BIN = Path(sys.executable).parent
RELEASE, NAMESPACE = "flyteagents", "flyte"
# The oldest Kubernetes the chart supports (gRPC probes are GA from 1.27) and the newest schemas at hand.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
SECRET_WORDS = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _tool(name: str) -> str:
    """Path of a tool bootstrap installs into the venv; helm exists only for linux x86_64."""
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        if name == "helm" and (platform.system(), platform.machine()) != ("Linux", "x86_64"):
            pytest.skip("helm is packaged for linux x86_64 only (see scripts/install_deploy_tools.sh)")
        pytest.fail(f"{name} is not installed: run bash scripts/bootstrap.sh")
    return path


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("helm")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


def _helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("helm"), *args], env=env, capture_output=True, text=True, timeout=60)


class RenderError(Exception):
    """helm template failed; the message is helm's stderr."""


Objects = dict[tuple[str, str], dict[str, Any]]
Render = Callable[..., Objects]


@pytest.fixture(scope="module")
def render(helm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Render:
    """render(values) -> {(kind, name): object} of `helm template` with those values."""
    folder = tmp_path_factory.mktemp("values")

    def _render(values: dict[str, Any] | None = None, kube_version: str = KUBE_VERSIONS[0]) -> Objects:
        values_file = folder / f"values-{len(list(folder.iterdir()))}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        done = _helm(
            helm_env, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", kube_version, "-f", str(values_file),
        )  # fmt: skip
        if done.returncode != 0:
            raise RenderError(done.stderr)
        objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        rendered = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        assert len(rendered) == len(objects), "two objects of one kind share a name"
        return rendered

    return _render


def _one(rendered: dict, kind: str) -> dict:
    (obj,) = [o for (k, _), o in rendered.items() if k == kind]
    return obj


def _container(rendered: dict) -> dict:
    (container,) = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _validate(rendered: dict, kube_version: str) -> None:
    """Every object against Kubernetes' own OpenAPI schemas, unknown fields rejected (CRDs excepted)."""
    import kubernetes_validate

    for (kind, name), obj in rendered.items():
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} is invalid for Kubernetes {kube_version}: {exc.message} at {list(exc.path)}")


FULL_VALUES: dict[str, Any] = {
    "tls": {"enabled": True, "secretName": "flyteagents-tls", "clientAuth": True},
    "secrets": {
        "files": [{"name": "bigquery", "secretName": "bigquery-sa", "mountPath": "/etc/secrets/bigquery"}],
        "env": [{"name": "OPENAI_API_KEY", "secretName": "openai", "key": "api-key"}],
        "envFrom": [{"secretName": "databricks"}],
    },
    "extraEnv": {"FLYTEAGENTS_OPENAI_BASE_URL": "https://openai.internal/v1"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "settings": {"modules": ["company.agents", "company.more_agents"]},
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "agents@p.iam.gserviceaccount.com"}},
}


# --- the chart ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["defaults", "tls-secrets-monitor"])
def test_chart_lints_strict(helm_env: dict[str, str], tmp_path: Path, values: dict) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = _helm(helm_env, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_defaults_render_the_expected_valid_objects(render: Render, kube_version: str) -> None:
    rendered = render(kube_version=kube_version)
    assert sorted(rendered) == [
        ("ConfigMap", "flyteagents"),
        ("Deployment", "flyteagents"),
        ("HorizontalPodAutoscaler", "flyteagents"),
        ("PodDisruptionBudget", "flyteagents"),
        ("Service", "flyteagents"),
        ("Service", "flyteagents-headless"),
        ("ServiceAccount", "flyteagents"),
    ]
    _validate(rendered, kube_version)


def test_everything_on_renders_valid_objects(render: Render) -> None:
    for kube_version in KUBE_VERSIONS:
        rendered = render(FULL_VALUES, kube_version)
        assert ("ServiceMonitor", "flyteagents") in rendered
        _validate(rendered, kube_version)


def test_probes_ask_grpc_health_on_the_served_port(render: Render) -> None:
    rendered = render({"settings": {"port": 8123}})
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == 8123
    assert _one(rendered, "ConfigMap")["data"]["FLYTEAGENTS_PORT"] == "8123"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        # A gRPC probe with no service name asks for the server's overall health ("").
        assert container[probe]["grpc"] == {"port": 8123}, probe
    for service in (rendered["Service", "flyteagents"], rendered["Service", "flyteagents-headless"]):
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["targetPort"] == "grpc" and grpc_port["port"] == 8000
        assert service["spec"]["selector"].items() <= _pod_labels(rendered).items()
    assert rendered["Service", "flyteagents-headless"]["spec"]["clusterIP"] == "None"


def test_with_tls_probes_fall_back_to_tcp(render: Render) -> None:
    container = _container(render(FULL_VALUES))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "grpc" not in container[probe]
        assert container[probe]["tcpSocket"] == {"port": "grpc"}


def _pod_labels(rendered: dict) -> dict:
    return _one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_pod_runs_non_root_on_a_read_only_filesystem(render: Render) -> None:
    rendered = render()
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid() != 0
    assert pod["automountServiceAccountToken"] is False
    container = _container(rendered)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # With a read-only root, /tmp (flytekit stages files there, HOME points there) must be a volume.
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert container["resources"]["requests"]["cpu"]


def test_hpa_scales_the_deployment_on_cpu(render: Render) -> None:
    rendered = render()
    hpa, deployment = _one(rendered, "HorizontalPodAutoscaler"), _one(rendered, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # The HPA owns the replica count: a fixed one would fight it on every upgrade.
    assert "replicas" not in deployment["spec"]

    fixed = render({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert "HorizontalPodAutoscaler" not in {kind for kind, _ in fixed}
    assert _one(fixed, "Deployment")["spec"]["replicas"] == 3


def test_pdb_covers_the_pods(render: Render) -> None:
    rendered = render()
    pdb = _one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(rendered).items()
    assert render({"podDisruptionBudget": {"maxUnavailable": 1}})["PodDisruptionBudget", "flyteagents"]["spec"] == {
        "maxUnavailable": 1,
        "selector": pdb["spec"]["selector"],
    }


def test_settings_reach_the_container_through_the_configmap(render: Render) -> None:
    settings = {
        "port": 8100,
        "metricsPort": 9100,
        "syncWorkers": 7,
        "gracePeriod": 40,
        "loop": "asyncio",
        "logLevel": "DEBUG",
        "metricsHost": "127.0.0.1",
        "reflection": False,
    }
    rendered = render({"settings": {**settings, "modules": ["a.agents", "b"]}, "extraEnv": {"REGION": "eu"}})
    configmap = _one(rendered, "ConfigMap")
    assert configmap["data"] == {
        "FLYTEAGENTS_HOST": "0.0.0.0",
        "FLYTEAGENTS_PORT": "8100",
        "FLYTEAGENTS_METRICS_PORT": "9100",
        "FLYTEAGENTS_METRICS_HOST": "127.0.0.1",
        "FLYTEAGENTS_REFLECTION": "false",
        "FLYTEAGENTS_SYNC_WORKERS": "7",
        "FLYTEAGENTS_WORKERS": "1",  # the default values' CPU request, 500m, rounded down to at least one
        "FLYTEAGENTS_GRACE_PERIOD": "40",
        "FLYTEAGENTS_LOOP": "asyncio",
        "FLYTEAGENTS_LOG_LEVEL": "DEBUG",
        "FLYTEAGENTS_MODULES": "a.agents,b",
        "REGION": "eu",
    }
    container = _container(rendered)
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in container["envFrom"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8100, "metrics": 9100}
    # SIGKILL must not cut the drain short: Kubernetes waits for preStop, then the grace period.
    pod = _one(rendered, "Deployment")["spec"]["template"]
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop == ["sleep", "5"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 40 + 5
    # Env from a ConfigMap is read at start only: changing a setting must roll the pods.
    before = render()
    assert (
        pod["metadata"]["annotations"]["checksum/config"]
        != _one(before, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )


@pytest.mark.parametrize(
    ("values", "workers"),
    [
        ({"resources": {"limits": {"cpu": "2500m"}, "requests": {"cpu": 1}}}, "2"),
        ({"resources": {"limits": {"cpu": 4}}}, "4"),
        ({"resources": {"limits": {"cpu": "2"}}}, "2"),
        ({"resources": {"requests": {"cpu": 3.5}}}, "3"),  # no limit: the request
        ({"resources": {"requests": {"cpu": "200m"}}}, "1"),
        ({"resources": {}}, "1"),
        ({"settings": {"workers": 3}, "resources": {"limits": {"cpu": 8}}}, "3"),  # explicit wins
    ],
)
def test_workers_follow_the_cpu_limit(render: Render, values: dict, workers: str) -> None:
    assert _one(render(values), "ConfigMap")["data"]["FLYTEAGENTS_WORKERS"] == workers


def test_configmap_keys_are_options_of_flyteagents_serve(render: Render) -> None:
    import click

    if importlib.util.find_spec("flyteagents.cli") is None:
        pytest.skip("the flyteagents CLI is not on this branch yet")
    module = importlib.import_module("flyteagents.cli._main")
    (group,) = [obj for obj in vars(module).values() if isinstance(obj, click.Group)]
    serve = group.commands["serve"]
    envvars = {param.envvar for param in serve.params if getattr(param, "envvar", None)}
    # Every variable the chart sets itself (plugin settings in extraEnv are the plugins' business).
    data = _one(render({**FULL_VALUES, "extraEnv": {}}), "ConfigMap")["data"]
    ours = {key for key in data if key.startswith("FLYTEAGENTS_")}
    assert ours - envvars == set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _task_types_of(module: Path) -> set[str]:
    """The task types a test agents module defines (its *_TYPE constants)."""
    return set(re.findall(r'^[A-Z]+_TYPE = "([^"]+)"', module.read_text(), re.M))


def test_the_pods_environment_starts_a_service_its_probes_pass(render: Render) -> None:
    """Start `flyteagents serve` as the image's entrypoint would, with exactly the environment the
    rendered pod gets (ConfigMap via envFrom, then the container's env), and check it the way the
    kubelet and Prometheus do. Only the address differs: tests listen on loopback, not 0.0.0.0."""
    import grpc
    from flyteidl.admin.agent_pb2 import ListAgentsRequest
    from flyteidl.service.agent_pb2_grpc import AgentMetadataServiceStub
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, metrics_port = _free_port(), _free_port()
    values = {"settings": {"port": port, "metricsPort": metrics_port, "modules": ["service_serve_agents"]}}
    rendered = render(values)
    container = _container(rendered)
    env = {**os.environ, **_one(rendered, "ConfigMap")["data"]}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["FLYTEAGENTS_HOST"] = "127.0.0.1"
    grace = _one(rendered, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    command = [str(BIN / "flyteagents"), "serve"]  # the image's ENTRYPOINT; the chart passes no args
    proc = subprocess.Popen(command, cwd=ROOT / "tests", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{container['readinessProbe']['grpc']['port']}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            # The kubelet's grpc probe: Health/Check with the probe's service name (none: "").
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            agents = AgentMetadataServiceStub(channel).ListAgents(ListAgentsRequest(), timeout=5).agents
            served = {c.name for agent in agents for c in agent.supported_task_categories}
            # FLYTEAGENTS_MODULES from the ConfigMap was imported: its agents are served (next to the
            # installed entry points', such as the core's own sensor engine).
            assert _task_types_of(ROOT / "tests" / "service_agents.py") <= served
            assert "sensor" in served
        metrics_target = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_target}/metrics", timeout=5) as answer:
            body = answer.read().decode()
        assert "flyteagents_requests_total" in body and 'operation="list_agents"' in body
        # What the kubelet does at deletion, after preStop: SIGTERM, then SIGKILL after the grace.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=grace) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()  # type: ignore[union-attr]


def test_tls_and_agent_secrets_are_mounted_not_copied(render: Render) -> None:
    rendered = render(FULL_VALUES)
    data = _one(rendered, "ConfigMap")["data"]
    assert data["FLYTEAGENTS_TLS_CERT"] == "/etc/flyteagents/tls/tls.crt"
    assert data["FLYTEAGENTS_TLS_KEY"] == "/etc/flyteagents/tls/tls.key"
    assert data["FLYTEAGENTS_TLS_CLIENT_CA"] == "/etc/flyteagents/tls/ca.crt"
    assert data["FLYTEAGENTS_MODULES"] == "company.agents,company.more_agents"
    assert data["FLYTEAGENTS_OPENAI_BASE_URL"] == "https://openai.internal/v1"
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container(rendered)["volumeMounts"]}
    tls = mounts["/etc/flyteagents/tls"]
    assert tls["readOnly"] and volumes[tls["name"]]["secret"]["secretName"] == "flyteagents-tls"
    bigquery = mounts["/etc/secrets/bigquery"]
    assert bigquery["readOnly"] and volumes[bigquery["name"]]["secret"]["secretName"] == "bigquery-sa"
    container = _container(rendered)
    assert {
        "name": "OPENAI_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}},
    } in container["env"]
    assert {"secretRef": {"name": "databricks"}} in container["envFrom"]
    # The chart holds no secret values: no Secret objects, nothing secret-looking in the ConfigMap.
    assert "Secret" not in {kind for kind, _ in rendered}
    assert not [key for key in data if SECRET_WORDS.search(key)]


def _selects(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) matches obj's labels."""
    labels = obj["metadata"].get("labels", {})
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def test_service_monitor_scrapes_the_metrics_port(render: Render) -> None:
    rendered = render(FULL_VALUES)
    monitor = _one(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # Each pod is scraped once: the selector picks the main Service, not the headless one too.
    selected = [
        o for (kind, _), o in rendered.items() if kind == "Service" and _selects(monitor["spec"]["selector"], o)
    ]
    assert [s["metadata"]["name"] for s in selected] == ["flyteagents"]
    service = rendered["Service", "flyteagents"]
    metrics = next(p for p in service["spec"]["ports"] if p["name"] == "metrics")
    container_port = next(p for p in _container(rendered)["ports"] if p["name"] == metrics["targetPort"])
    assert str(container_port["containerPort"]) == _one(rendered, "ConfigMap")["data"]["FLYTEAGENTS_METRICS_PORT"]
    assert "ServiceMonitor" not in {kind for kind, _ in render()}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"terminationGracePeriodSeconds": 20}, "must exceed preStopSleepSeconds + settings.gracePeriod"),
        ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
        ({"tls": {"clientAuth": True}}, "tls.clientAuth (mutual TLS) needs tls.enabled"),
        ({"extraEnv": {"FLYTEAGENTS_PORT": "1"}}, "extraEnv.FLYTEAGENTS_PORT: the chart sets it from `settings`"),
        # values.schema.json: a misspelt key or a wrong type is refused, not silently ignored.
        ({"setings": {"port": 1}}, "additional properties 'setings' not allowed"),
        ({"settings": {"port": "8000"}}, "at '/settings/port': got string, want integer"),
        ({"settings": {"loop": "trio"}}, "at '/settings/loop': value must be one of 'auto', 'uvloop', 'asyncio'"),
        ({"secrets": {"env": [{"name": "X", "secretName": "s"}]}}, "missing property 'key'"),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(render: Render, values: dict, message: str) -> None:
    with pytest.raises(RenderError) as failure:
        render(values)
    assert message in str(failure.value)


def test_chart_refuses_kubernetes_without_grpc_probes(render: Render) -> None:
    with pytest.raises(RenderError) as failure:
        render(kube_version="1.26.0")
    assert "incompatible with Kubernetes v1.26.0" in str(failure.value)


def test_notes_tell_how_to_reach_the_service(helm_env: dict[str, str]) -> None:
    done = _helm(helm_env, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "flyteagents.flyte.svc.cluster.local:8000" in notes
    assert "dns:///flyteagents-headless.flyte.svc.cluster.local:8000" in notes
    assert "rollout status deployment/flyteagents" in notes


# --- the image ---------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = [[]]
    for instruction in _instructions(DEPLOY / "Dockerfile"):
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def _dockerfile_uid() -> int:
    (user,) = [args for op, args in _stages()[-1] if op == "USER"]
    return int(user.split(":")[0])


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_slim_multi_stage_non_root() -> None:
    preamble, build, final = _stages()
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in preamble
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build") and final[0] == ("FROM", "${PYTHON_IMAGE}")
    # Plugins are chosen at build time and handed to the wheel build.
    assert ("ARG", 'PLUGINS=""') in build
    assert [args for op, args in build if op == "RUN"] == ["build-wheels /wheels ${PLUGINS}"]
    # The final stage copies nothing in: the wheels come through a build mount, so neither the
    # sources nor anything else from the build context becomes a layer.
    assert not [args for op, args in final if op in ("COPY", "ADD")]
    (install,) = [args for op, args in final if op == "RUN" and "--mount=type=bind,from=build" in args]
    assert "venv" in install and "--no-index" in install
    # Runs as a non-root numeric user (so runAsNonRoot can verify it), as the last USER.
    assert [op for op, _ in final].index("USER") > max(i for i, (op, _) in enumerate(final) if op == "RUN")
    assert _dockerfile_uid() >= 1000
    assert ("EXPOSE", "8000 9090") in final
    assert ("ENTRYPOINT", '["flyteagents", "serve"]') in final
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["settings"]["port"], values["settings"]["metricsPort"]) == (8000, 9090)
    assert values["podSecurityContext"]["runAsUser"] == _dockerfile_uid()


def test_dockerfile_bakes_in_no_secrets() -> None:
    for op, args in _instructions(DEPLOY / "Dockerfile"):
        if op in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][\w.]*)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_WORDS.search(n)], (op, args)
        if op in ("COPY", "ADD"):
            assert not SECRET_WORDS.search(args) and ".env" not in args.split(), (op, args)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        if pattern.startswith("**/"):
            regex = "(?:.*/)?" + fnmatch.translate(pattern[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_the_build_inputs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    sent = {f for f in files if not _dockerignored(f, patterns)}
    allowed = re.compile(
        r"pyproject\.toml|README\.md|deploy/build-wheels\.sh|flyteagents/.*|plugins/[^/]+/(?!tests/).*"
    )
    assert {f for f in sent if not allowed.fullmatch(f)} == set()
    assert {"pyproject.toml", "README.md", "deploy/build-wheels.sh", "flyteagents/__init__.py"} <= sent
    assert not _dockerignored("plugins/x/src/flyteagents_x/__init__.py", patterns)
    assert _dockerignored("plugins/x/tests/test_x.py", patterns)
    assert _dockerignored(".venv/bin/python", patterns) and _dockerignored(".git/HEAD", patterns)
    # Everything the Dockerfile copies is sent.
    for op, args in _instructions(DEPLOY / "Dockerfile"):
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert not _dockerignored(source, patterns), source


def test_build_script_passes_shellcheck() -> None:
    scripts = [DEPLOY / "build-wheels.sh", *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    done = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_build_script_rejects_an_unknown_plugin_before_building(tmp_path: Path) -> None:
    # PIP names a command that cannot run: the script must stop at the name check, before any pip call.
    env = {**os.environ, "PIP": str(tmp_path / "no-pip")}
    done = subprocess.run(
        ["sh", str(DEPLOY / "build-wheels.sh"), str(tmp_path / "out"), "no_such_plugin"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "unknown plugin 'no_such_plugin'; the plugins are:" in done.stderr
    known = sorted(p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml"))
    assert done.stderr.split("the plugins are:")[1].split() == known
    assert not (tmp_path / "out").exists()


# --- FlytePropeller ----------------------------------------------------------------------------------

SNIPPETS = {
    # file: (plugin id, default deployment key, deployments key, task type -> deployment key)
    "flytepropeller-config.yaml": ("agent-service", "defaultAgent", "agents", "agentForTaskTypes"),
    "flytepropeller-connector-config.yaml": (
        "connector-service", "defaultConnector", "connectors", "connectorForTaskTypes",
    ),
}  # fmt: skip


def _deployed_projects() -> list[dict[str, Any]]:
    """The `[project]` tables of what the chart's image installs: the core and every plugin in plugins/."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: mypy's dependency
        import tomli as tomllib  # type: ignore[no-redef]

    pyprojects = [ROOT / "pyproject.toml", *ROOT.glob("plugins/*/pyproject.toml")]
    return [tomllib.loads(pyproject.read_text())["project"] for pyproject in pyprojects]


def _entry_point_task_types() -> set[str]:
    """Task types registered under `flyteagents.agents` by the core and every plugin in the repo."""
    found: set[str] = set()
    for project in _deployed_projects():
        found |= set(project.get("entry-points", {}).get("flyteagents.agents", {}))
    return found


def _duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert match, f"not a duration: {text!r}"
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


@pytest.mark.parametrize("snippet", sorted(SNIPPETS))
def test_propeller_routes_every_agent_task_type_to_the_service(snippet: str) -> None:
    plugin, default_key, deployments_key, for_types_key = SNIPPETS[snippet]
    config = yaml.safe_load((DEPLOY / snippet).read_text())
    task_plugins = config["tasks"]["task-plugins"]
    assert plugin in task_plugins["enabled-plugins"]
    routed = {t for t, p in task_plugins["default-for-task-types"].items() if p == plugin}
    expected = {"bigquery_query_job_task", "databricks", "chatgpt", "openai-batch", "sensor"}
    assert expected | _entry_point_task_types() <= routed
    section = config["plugins"][plugin]
    if for_types_key in section:
        assert set(section[for_types_key]) == routed
        assert set(section[for_types_key].values()) <= set(section[deployments_key])
    for deployment in [section[default_key], *section.get(deployments_key, {}).values()]:
        timeouts = {op: _duration_seconds(t) for op, t in deployment["timeouts"].items()}
        assert {"CreateTask", "GetTask", "DeleteTask", "ExecuteTaskSync"} <= set(timeouts)
        assert _duration_seconds(deployment["defaultTimeout"]) > 0
        service_config = json.loads(deployment["defaultServiceConfig"])
        assert service_config == {"loadBalancingConfig": [{"round_robin": {}}]}


@pytest.mark.parametrize("snippet", sorted(SNIPPETS))
def test_propeller_endpoint_is_the_charts_headless_service(render: Render, snippet: str) -> None:
    plugin, default_key, deployments_key, _ = SNIPPETS[snippet]
    section = yaml.safe_load((DEPLOY / snippet).read_text())["plugins"][plugin]
    rendered = render()
    headless = rendered["Service", "flyteagents-headless"]
    grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    endpoint = f"dns:///{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{grpc_port}"
    for deployment in [section[default_key], *section.get(deployments_key, {}).values()]:
        assert deployment["endpoint"] == endpoint
        # The chart serves plaintext by default; propeller must not attempt TLS against it.
        assert deployment["insecure"] is True
        assert "FLYTEAGENTS_TLS_CERT" not in _one(rendered, "ConfigMap")["data"]


# --- Flyte 2 ---------------------------------------------------------------------------------------

FLYTE2_SNIPPET = "flyte2-connector-config.yaml"
# The keys of the Flyte 2 backend's connector-service plugin (flyteorg/flyte v2:
# flyteplugins/go/tasks/plugins/webapi/connector/config.go, Config and Deployment), and the
# operation names its per-call timeouts are looked up by (plugin.go, client.go).
FLYTE2_PLUGIN_KEYS = {
    "webApi", "resourceConstraints", "defaultConnector", "connectors", "connectorApps",
    "connectorForTaskTypes", "supportedTaskTypes", "pollInterval", "logs",
}  # fmt: skip
FLYTE2_DEPLOYMENT_KEYS = {
    "endpoint",
    "insecure",
    "defaultServiceConfig",
    "timeouts",
    "defaultTimeout",
    "project",
    "domain",
}
FLYTE2_OPERATIONS = {"CreateTask", "GetTask", "DeleteTask", "ListConnectors"}


def _entry_point_agents() -> dict[str, bool]:
    """Task type -> is_sync, for every agent the core and the installed plugins register."""
    from flyteagents import AgentRegistry

    registry = AgentRegistry()
    failures = registry.load_plugins()
    assert not failures
    # Not examples/plugin, which the test environment also installs: the image does not.
    packages = {project["name"].replace("-", "_") for project in _deployed_projects()}
    return {
        task_type: agent.is_sync
        for (task_type, _), agent in registry.agents.items()
        if type(agent).__module__.split(".")[0] in packages
    }


def test_flyte2_backend_routes_every_async_task_type_to_the_service(render: Render) -> None:
    config = yaml.safe_load((DEPLOY / FLYTE2_SNIPPET).read_text())
    routed = {
        t for t, p in config["tasks"]["task-plugins"]["default-for-task-types"].items() if p == "connector-service"
    }
    agents = _entry_point_agents()
    assert set(agents) == _entry_point_task_types()
    # every async agent, and no sync one: Flyte 2 has no sync call
    assert routed == {task_type for task_type, is_sync in agents.items() if not is_sync}
    section = config["plugins"]["connector-service"]
    assert set(section) <= FLYTE2_PLUGIN_KEYS
    deployment = section["defaultConnector"]
    assert set(deployment) <= FLYTE2_DEPLOYMENT_KEYS
    timeouts = {op: _duration_seconds(t) for op, t in deployment["timeouts"].items()}
    assert {"CreateTask", "GetTask", "DeleteTask"} <= set(timeouts) <= FLYTE2_OPERATIONS
    assert json.loads(deployment["defaultServiceConfig"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    headless = render()["Service", "flyteagents-headless"]
    grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    assert deployment["endpoint"] == f"dns:///{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{grpc_port}"
    assert deployment["insecure"] is True
    caching = section["webApi"]["caching"]
    assert _duration_seconds(caching["resyncInterval"]) == 30 and caching["maxSystemFailures"] == 5


def test_protocols_setting_reaches_the_service(render: Render) -> None:
    assert "FLYTEAGENTS_PROTOCOLS" not in _one(render(), "ConfigMap")["data"]  # both, the service's default
    data = _one(render({"settings": {"protocols": ["v2"]}}), "ConfigMap")["data"]
    assert data["FLYTEAGENTS_PROTOCOLS"] == "v2"
    import click

    module = importlib.import_module("flyteagents.cli._main")
    (group,) = [obj for obj in vars(module).values() if isinstance(obj, click.Group)]
    assert "FLYTEAGENTS_PROTOCOLS" in {p.envvar for p in group.commands["serve"].params}
    with pytest.raises(RenderError) as failure:
        render({"settings": {"protocols": ["v3"]}})
    assert "/settings/protocols/0" in str(failure.value)
    with pytest.raises(RenderError) as failure:
        render({"extraEnv": {"FLYTEAGENTS_PROTOCOLS": "v1"}})
    assert "extraEnv.FLYTEAGENTS_PROTOCOLS: the chart sets it from `settings`" in str(failure.value)
