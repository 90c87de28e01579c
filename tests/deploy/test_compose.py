"""compose.yaml and .env.example, offline: Debian's docker-compose validates the file, every
service runs a real pagemill command with real settings, .env.example documents every
setting, and the default set runs without a GPU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checks import (
    ROOT,
    as_argv,
    check_celery_apps,
    check_pagemill_argv,
    check_settings,
    is_pagemill,
    setting_names,
)

COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SETTING_LINE = re.compile(r"^(# )?(PAGEMILL_[A-Z0-9_]+)=(.*)$")
VARIABLE_LINE = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$")
# Read by compose itself, not through ${...} in the file.
COMPOSE_OWN = {"COMPOSE_PROFILES"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _pagemill_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _services().items() if is_pagemill(as_argv(s.get("command")))}


def _docker_compose(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose` in a folder holding compose.yaml and .env from .env.example, as a
    user would run it after `cp .env.example .env`."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/install-deploy-tools.sh installs it"
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    return subprocess.run(
        [binary, "--project-directory", str(tmp_path), "-f", str(tmp_path / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_validates(tmp_path: Path, profile: str | None) -> None:
    args = ["--profile", profile] if profile else []
    done = _docker_compose(tmp_path, *args, "config", "-q")
    assert done.returncode == 0, done.stderr


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really validates: a misspelt depends_on condition fails it."""
    done = _docker_compose(tmp_path, "config", "-q")
    assert done.returncode == 0, done.stderr
    text = COMPOSE.read_text().replace("service_completed_successfully", "service_completed", 1)
    (tmp_path / "compose.yaml").write_text(text)
    binary = shutil.which("docker-compose")
    assert binary
    broken = subprocess.run(
        [binary, "--project-directory", str(tmp_path), "-f", str(tmp_path / "compose.yaml"),
         "config", "-q"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert broken.returncode != 0
    assert "service_completed" in broken.stderr


def test_default_set_runs_without_a_gpu() -> None:
    # Compose runs a service without `profiles` always, one with them only when asked.
    services = _services()
    default = {n for n, s in services.items() if not s.get("profiles")}
    with_gpu = {n for n, s in services.items() if "gpu" in s.get("profiles", ["gpu"])}
    for name in default:
        reservations = services[name].get("deploy", {}).get("resources", {}).get("reservations", {})
        assert "devices" not in reservations, f"{name} needs a GPU but runs by default"
    # Something recognizes on CPUs by default: a `worker gpu` (the gpu queue) on rapidocr.
    recognizers = [
        n for n in default if (as_argv(services[n].get("command")) or [])[1:3] == ["worker", "gpu"]
    ]
    assert recognizers, "no recognizer in the default set"
    for name in recognizers:
        assert services[name]["environment"]["PAGEMILL_RECOGNIZER"] == "rapidocr"
    assert {"gpu-worker", "layout-worker"} <= with_gpu - default


def test_gpu_services() -> None:
    services = _services()
    for name, role in (("gpu-worker", "gpu"), ("layout-worker", "layout")):
        service = services[name]
        assert service["profiles"] == ["gpu"]
        argv = as_argv(service["command"])
        assert argv[:3] == ["pagemill", "worker", role]
        assert "--gpus" in argv, "one process per GPU comes from --gpus"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices)
        assert service["shm_size"]
    assert services["gpu-worker"]["environment"]["PAGEMILL_RECOGNIZER"] == "vllm"
    assert services["layout-worker"]["environment"]["PAGEMILL_LAYOUT_ENGINE"] == "transformers"


def test_every_command_is_a_pagemill_command(tmp_path: Path) -> None:
    # As compose runs them: ${...} filled in from .env.example.
    done = _docker_compose(tmp_path, "--profile", "gpu", "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    pagemill = {n: s for n, s in services.items() if is_pagemill(as_argv(s.get("command")))}
    assert set(services) - set(pagemill) == {"redis", "postgres", "s3"}
    assert {"migrate", "api", "cpu-worker", "sweeper", "flower"} <= set(pagemill)
    for name, service in pagemill.items():
        check_pagemill_argv(as_argv(service["command"]), f"compose service {name}")
        test = as_argv(service.get("healthcheck", {}).get("test"))
        if is_pagemill(test):
            check_pagemill_argv(test, f"compose service {name} healthcheck")
        check_celery_apps(" ".join(test or []), f"compose service {name} healthcheck")


def test_every_environment_variable_is_a_setting() -> None:
    env = _compose()["x-pagemill-env"]
    for name, service in _pagemill_services().items():
        values = {k: str(v) for k, v in service.get("environment", {}).items()}
        # ${...} is compose's, filled from .env: check names, and values without it.
        literal = {k: v for k, v in values.items() if "${" not in v}
        check_settings(literal, f"compose service {name}")
        assert not set(values) - setting_names(), name
        assert service.get("env_file") == ".env", f"{name} does not read .env"
        assert set(env) <= set(values), f"{name} misses the service addresses"


def test_long_running_services_have_healthchecks_and_wait_for_migrate() -> None:
    services = _services()
    assert services["migrate"]["restart"] == "no"
    assert as_argv(services["migrate"]["command"]) == ["pagemill", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        if name == "migrate":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        argv = as_argv(service.get("command")) or []
        if argv[1:2] in (["api"], ["worker"], ["sweeper"]):
            depends = service["depends_on"]
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            assert depends["redis"]["condition"] == "service_healthy", name


def test_workers_check_themselves() -> None:
    for name, service in _pagemill_services().items():
        argv = as_argv(service["command"])
        if argv[1] == "worker":
            check = ["pagemill", "worker", argv[2], "--check"]
            assert as_argv(service["healthcheck"]["test"]) == check, name
            assert service.get("stop_grace_period"), f"{name}: no time for a warm shutdown"


def test_named_volumes() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith((".", "/")), f"bind mount {volume}: use a named volume"
            used.add(source)
    assert used == declared


def test_flower_needs_credentials() -> None:
    flower = _services()["flower"]
    argv = as_argv(flower["command"])
    assert "--unauthenticated" not in argv
    names = {m.group(2): m.group(1) for line in ENV_EXAMPLE.read_text().splitlines()
             if (m := SETTING_LINE.match(line))}  # fmt: skip
    assert "PAGEMILL_FLOWER_BASIC_AUTH" in names, "flower auth is missing from .env.example"
    assert names["PAGEMILL_FLOWER_BASIC_AUTH"] is None, "flower auth is commented out"


def _env_example() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def test_env_example_documents_every_setting() -> None:
    lines = _env_example()
    seen: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = SETTING_LINE.match(line)
        if not match:
            continue
        name = match.group(2)
        assert name not in seen, f".env.example names {name} twice"
        seen[name] = number
        before = lines[number - 1]
        assert before.startswith("# ") and not SETTING_LINE.match(before), (
            f".env.example: {name} has no comment line saying what it is"
        )
    assert not set(seen) - setting_names(), f"not settings: {sorted(set(seen) - setting_names())}"
    assert not setting_names() - set(seen), f"undocumented: {sorted(setting_names() - set(seen))}"
    active = {m.group(2): m.group(3) for line in lines if (m := SETTING_LINE.match(line))
              and m.group(1) is None}  # fmt: skip
    check_settings(active, ".env.example")


def test_env_example_compose_variables_are_used() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    documented = {
        m.group(2)
        for line in _env_example()
        if (m := VARIABLE_LINE.match(line)) and not m.group(2).startswith("PAGEMILL_")
    }
    assert documented - COMPOSE_OWN == used, (documented, used)
    assert not {v for v in used if v.startswith("PAGEMILL_")}, "settings come from .env directly"
