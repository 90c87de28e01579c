"""deploy/k8s, offline: the kustomize base renders, every core object passes
kubernetes-validate (strict), the KEDA objects pass KEDA's own CRD models, and the
manifests agree with the code: real commands and settings, the queue names of
app/queue.py, grace periods that cover the tasks' time limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

from app.processes import worker_command
from app.queue import ROUTES, celery_config
from app.settings import Settings
from tests.deploy.checks import (
    ROOT,
    as_argv,
    check_celery_apps,
    check_pagemill_argv,
    check_settings,
    is_pagemill,
)

BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "example"
# The oldest and the newest Kubernetes the manifests are checked against.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
KEDA_API = "keda.sh/v1alpha1"
# Metadata the redis scaler reads (KEDA docs, scalers/redis-lists); anything else is a typo.
REDIS_SCALER_KEYS = {
    "address", "host", "port", "username", "passwordFromEnv", "addressFromEnv", "hostFromEnv",
    "portFromEnv", "usernameFromEnv", "listName", "listLength", "activationListLength",
    "databaseIndex", "enableTLS", "unsafeSsl",
}  # fmt: skip


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize` makes of a base with resources, labels and images."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['name']}:{i['newTag']}" for i in kustomization.get("images", [])}
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((folder / resource).read_text()):
            doc["metadata"].setdefault("labels", {}).update(labels)
            for container in _containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            docs.append(doc)
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(doc)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(BASE)


def _worker_role(deployment: dict[str, Any]) -> str | None:
    argv = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    return argv[2] if argv[1:2] == ["worker"] else None


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate(docs: list[dict[str, Any]], version: str) -> None:
    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    kinds = {d["kind"] for d in core}
    assert {"Deployment", "Job", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"} <= kinds
    for doc in core:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_typo(docs: list[dict[str, Any]]) -> None:
    deployment = dict(_by_kind(docs, "Deployment")["pagemill-api"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def _keda_check(doc: dict[str, Any]) -> None:
    """KEDA's CRD models (cloudcoil-models-keda, generated from KEDA's CRDs) take the object
    and give it back unchanged: no unknown or dropped field, every type right."""
    model = getattr(keda, doc["kind"]).model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == doc


def test_keda_objects_validate(docs: list[dict[str, Any]]) -> None:
    objects = [d for d in docs if d["apiVersion"] == KEDA_API]
    assert {"ScaledObject", "TriggerAuthentication"} == {d["kind"] for d in objects}
    for doc in objects:
        _keda_check(doc)


def test_keda_check_catches_a_typo(docs: list[dict[str, Any]]) -> None:
    scaled = _by_kind(docs, "ScaledObject")["pagemill-cpu-worker"]
    with pytest.raises(AssertionError):
        _keda_check({**scaled, "spec": {**scaled["spec"], "minReplicas": 1}})
    trigger = scaled["spec"]["triggers"][0]
    numeric = {**trigger, "metadata": {**trigger["metadata"], "listLength": 20}}
    with pytest.raises(ValueError):  # trigger metadata is a map of strings
        _keda_check({**scaled, "spec": {**scaled["spec"], "triggers": [numeric]}})


def _secret_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return _by_kind(docs, "Secret")[name]["stringData"]


def _queue_of(role: str) -> str:
    """The queue a `pagemill worker ROLE` consumes, as app.processes builds its argv."""
    argv, _ = worker_command(role, Settings())
    return argv[argv.index("-Q") + 1]


def test_scaled_objects_watch_the_real_queues(docs: list[dict[str, Any]]) -> None:
    config = _by_kind(docs, "ConfigMap")["pagemill-config"]["data"]
    prefix = config.get("PAGEMILL_BROKER_KEY_PREFIX", "")
    broker = urlparse(_secret_data(docs, "pagemill-secrets")["PAGEMILL_BROKER_URL"])
    assert broker.scheme == "redis"
    database = broker.path.strip("/") or "0"
    settings = Settings(broker_url=broker.geturl(), broker_key_prefix=prefix)
    options = celery_config(settings)["broker_transport_options"]
    assert options.get("global_keyprefix", "") == prefix
    # Every queue a task is routed to has workers, and KEDA watches it.
    worker_queues = set(ROUTES.values())

    deployments = _by_kind(docs, "Deployment")
    auths = _by_kind(docs, "TriggerAuthentication")
    watched = set()
    for name, scaled in _by_kind(docs, "ScaledObject").items():
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        role = _worker_role(target)
        assert role is not None, f"{name} scales {target['metadata']['name']}, no worker"
        queue = _queue_of(role)
        assert "replicas" not in target["spec"], "KEDA's HPA owns the replica count"
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            metadata = trigger["metadata"]
            assert set(metadata) <= REDIS_SCALER_KEYS, set(metadata) - REDIS_SCALER_KEYS
            # kombu's Redis transport: a queue's waiting messages are the list <prefix><queue>.
            assert metadata["listName"] == f"{prefix}{queue}"
            assert metadata["databaseIndex"] == database
            int(metadata["listLength"])
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in _secret_data(docs, ref["name"])
            watched.add(queue)
    assert watched == worker_queues


def test_gpu_workers_scale_more_slowly(docs: list[dict[str, Any]]) -> None:
    scaled = _by_kind(docs, "ScaledObject")
    cpu = scaled["pagemill-cpu-worker"]["spec"]
    for name in ("pagemill-gpu-worker", "pagemill-layout-worker"):
        gpu = scaled[name]["spec"]
        assert gpu["cooldownPeriod"] > cpu["cooldownPeriod"]
        behavior = gpu["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleUp"]["policies"][0]["value"] == 1
        down = behavior["scaleDown"]["stabilizationWindowSeconds"]
        assert (
            down
            > cpu["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
                "stabilizationWindowSeconds"
            ]
        )


def test_every_command_and_probe_is_a_pagemill_command(docs: list[dict[str, Any]]) -> None:
    commands = set()
    for doc in docs:
        for container in _containers(doc):
            where = f"{doc['kind']} {doc['metadata']['name']}"
            check_pagemill_argv(container["command"], where)
            commands.add(tuple(container["command"][1:3]))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                argv = as_argv(container.get(probe, {}).get("exec", {}).get("command"))
                if is_pagemill(argv):
                    check_pagemill_argv(argv, f"{where} {probe}")
                check_celery_apps(" ".join(argv or []), f"{where} {probe}")
    assert {("migrate",), ("api", "--host"), ("worker", "cpu"), ("worker", "gpu"),
            ("worker", "layout"), ("sweeper",), ("flower", "--address")} <= {
        c[:1] if c[0] in ("migrate", "sweeper") else c for c in commands
    }  # fmt: skip


def test_settings_come_from_the_configmap_and_secret(docs: list[dict[str, Any]]) -> None:
    config = _by_kind(docs, "ConfigMap")["pagemill-config"]["data"]
    secret = _secret_data(docs, "pagemill-secrets")
    check_settings(config, "ConfigMap pagemill-config")
    check_settings(secret, "Secret pagemill-secrets")
    assert not set(config) & set(secret)
    for doc in docs:
        for container in _containers(doc):
            where = f"{doc['kind']} {doc['metadata']['name']}"
            refs = {(next(iter(r)), next(iter(r.values()))["name"]) for r in container["envFrom"]}
            assert refs == {("configMapRef", "pagemill-config"), ("secretRef", "pagemill-secrets")}
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            check_settings(env, where)


def test_probes_resources_and_security(docs: list[dict[str, Any]]) -> None:
    for name, deployment in _by_kind(docs, "Deployment").items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container.get("livenessProbe"), f"{name} has no liveness probe"
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
            assert "memory" in container["resources"]["limits"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            role = _worker_role(deployment)
            if role:
                check = ["pagemill", "worker", role, "--check"]
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert container[probe]["exec"]["command"] == check, (name, probe)


def test_api_probes(docs: list[dict[str, Any]]) -> None:
    container = _by_kind(docs, "Deployment")["pagemill-api"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # /healthz answers 503 while Postgres or Redis is down: liveness must not restart the
    # API for that, so it only checks that the process accepts connections.
    assert "httpGet" not in container["livenessProbe"]
    assert container["livenessProbe"]["tcpSocket"]["port"] == "http"


def test_grace_periods_cover_a_warm_shutdown(docs: list[dict[str, Any]]) -> None:
    """On SIGTERM Celery finishes the tasks it holds; a pod killed before that leaves them
    to the broker's visibility timeout (an hour). So a worker's grace period outlasts the
    hard time limit of every task of its queue."""
    from workers.tasks import celery_app

    needed = {"gpu": 600.0}  # recognition has no time limit: a page's regions, minutes
    for name, queue in ROUTES.items():
        limit = celery_app.tasks[name].time_limit or 0
        needed[queue] = max(needed.get(queue, 0), limit)
    assert needed["cpu"] >= 660
    for name, deployment in _by_kind(docs, "Deployment").items():
        role = _worker_role(deployment)
        if role is None:
            continue
        queue = _queue_of(role)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > needed[queue], f"{name}: {grace} s cannot finish a {needed[queue]} s task"


def test_gpu_pods(docs: list[dict[str, Any]]) -> None:
    deployments = _by_kind(docs, "Deployment")
    for name in ("pagemill-gpu-worker", "pagemill-layout-worker"):
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["command"][-2:] == ["--gpus", "0"], "one process for the pod's GPU"
        shm = {v["name"]: v for v in spec["volumes"]}["shm"]
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    for name, deployment in deployments.items():
        if name not in ("pagemill-gpu-worker", "pagemill-layout-worker"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
                assert not container["image"].startswith("pagemill-gpu")


def test_one_sweeper(docs: list[dict[str, Any]]) -> None:
    sweeper = _by_kind(docs, "Deployment")["pagemill-sweeper"]
    assert sweeper["spec"]["replicas"] == 1
    assert sweeper["spec"]["strategy"] == {"type": "Recreate"}
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in _by_kind(docs, "ScaledObject").values()}
    assert "pagemill-sweeper" not in targets


def test_disruption_budgets_select_deployments(docs: list[dict[str, Any]]) -> None:
    deployments = _by_kind(docs, "Deployment")
    budgets = _by_kind(docs, "PodDisruptionBudget")
    selected = set()
    for name, budget in budgets.items():
        labels = budget["spec"]["selector"]["matchLabels"]
        match = [
            n for n, d in deployments.items() if d["spec"]["selector"]["matchLabels"] == labels
        ]
        assert match, f"PodDisruptionBudget {name} selects no Deployment"
        selected.update(match)
    workers = {n for n, d in deployments.items() if _worker_role(d)}
    assert {"pagemill-api", *workers} <= selected


def test_migration_job(docs: list[dict[str, Any]]) -> None:
    job = _by_kind(docs, "Job")["pagemill-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["pagemill", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_overlay_example() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        path = OVERLAY / resource
        assert (path / "kustomization.yaml").exists() or path.is_file(), resource
    base_secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in render(BASE)
                    if d["kind"] == "Secret"}  # fmt: skip
    for generator in kustomization["secretGenerator"]:
        assert generator["behavior"] == "replace"
        for env_file in generator["envs"]:
            example = (OVERLAY / f"{env_file}.example").read_text()
            keys = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", example, re.MULTILINE))
            assert keys == base_secrets[generator["name"]], generator["name"]
    for generator in kustomization["configMapGenerator"]:
        for env_file in generator["envs"]:
            lines = (OVERLAY / env_file).read_text().splitlines()
            check_settings(dict(line.split("=", 1) for line in lines if line), env_file)
    # Filled-in secrets never reach git.
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/overlays/*/*.env" in gitignore
