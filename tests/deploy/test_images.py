"""deploy/Dockerfile, without a Docker engine: every stage the compose file and the
manifests name exists, every COPY source is in the build context, every pip extra exists,
the api and cpu images carry no GPU library, the gpu image's vLLM matches the gpu extra."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from typing import Any

import yaml

from tests.deploy.checks import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
GPU_PACKAGES = ("vllm", "torch", "nvidia-", "cuda", "triton", "transformers")


def _stages() -> dict[str, list[str]]:
    """Instructions per stage (continuation lines joined), keyed by stage name."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            current = match.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extras_installed(stage: str) -> set[str]:
    found = set()
    for line in _stages()[stage]:
        for extras in re.findall(r'"\.\[([^\]]+)\]"', line):
            found.update(e.strip() for e in extras.split(","))
    return found


def _inherited(stage: str) -> list[str]:
    """A stage's instructions after those of the stages it is built FROM."""
    stages = _stages()
    base = stages[stage][0].split()[1]
    return (_inherited(base) if base in stages else []) + stages[stage]


def test_targets_the_deployments_use_exist() -> None:
    stages = _stages()
    assert {"api", "cpu", "gpu"} <= set(stages)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            target = service["build"]["target"]
            assert target in stages, name
            assert f"-{target}:" in service["image"], name
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/base/kustomization.yaml").read_text())
    for image in kustomization["images"]:
        assert image["name"].removeprefix("pagemill-") in stages


def test_copy_sources_are_in_the_build_context() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage, lines in _stages().items():
        for line in lines:
            if not line.upper().startswith("COPY") or "--from" in line:
                continue
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"{stage}: COPY {source}: no such file"
                assert not any(fnmatch.fnmatch(source, p) for p in ignored), source


def test_extras_exist_and_the_cpu_images_have_no_gpu_library() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    for stage in ("api", "cpu", "gpu"):
        assert _extras_installed(stage) <= set(extras), stage
    assert _extras_installed("api") == {"api"}
    assert _extras_installed("cpu") == {"cpu"}
    for stage in ("api", "cpu"):
        assert _inherited(stage)[0].startswith("FROM python:"), stage
        for extra in _extras_installed(stage):
            for requirement in extras[extra]:
                assert not requirement.lower().startswith(GPU_PACKAGES), (stage, requirement)
        for requirement in _pyproject()["project"]["dependencies"]:
            assert not requirement.lower().startswith(GPU_PACKAGES), requirement


def test_gpu_image_is_vllm_with_the_layout_engine() -> None:
    gpu = _stages()["gpu"]
    image = gpu[0].split()[1]
    assert image == "${VLLM_IMAGE}"
    repository, tag = _args()["VLLM_IMAGE"].split(":")
    assert repository == "vllm/vllm-openai"
    gpu_extra = _pyproject()["project"]["optional-dependencies"]["gpu"]
    pinned = [r for r in gpu_extra if r.startswith("vllm==")]
    assert pinned == [f"vllm=={tag.removeprefix('v')}"], "the base image and the gpu extra differ"
    # The layout worker renders pages too: the cpu extra joins the gpu one, and the base's
    # torch / vLLM / transformers stay as they are.
    assert _extras_installed("gpu") == {"gpu", "cpu"}
    assert any("-c /tmp/base.txt" in line for line in gpu)
    assert any(line.startswith("ENTRYPOINT []") for line in gpu), "vLLM's image runs vllm serve"
