"""The chart's image recipe (deploy/docker/Dockerfile) agrees with the project: the Ray and
Python the project pins (the chart's rayVersion, the `ray up` file's image), every package
pyproject.toml ships, the gpu extra.  (This machine cannot build it: no Docker Hub.)"""

from __future__ import annotations

import re
import tomllib

import ray
import yaml

from orchestrator.serving import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"


def instructions(name: str) -> list[str]:
    lines = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [line.split(None, 1)[1] for line in lines if line.startswith(f"{name} ")]


def test_the_base_image_is_the_ray_the_project_and_the_other_paths_use():
    (base,) = instructions("FROM")
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    cluster = yaml.safe_load((REPO_ROOT / "deploy" / "ray" / "cluster.yaml").read_text())
    assert cluster["docker"]["image"] == base
    values = yaml.safe_load((REPO_ROOT / "k8s" / "charts" / "augserve" / "values.yaml").read_text())
    assert values["rayVersion"] == ray.__version__


def test_every_shipped_package_is_copied_and_let_through_the_dockerignore():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {src for line in instructions("COPY") for src in line.split()[1:-1]
              if not src.startswith("--")}
    assert packages <= copied
    allowed = {line[1:].rstrip("/") for line in (DOCKER / "Dockerfile.dockerignore")
               .read_text().splitlines() if line.startswith("!")}
    for src in copied:
        assert (REPO_ROOT / src).exists(), src
        assert src in allowed, f"{src} is copied but the .dockerignore keeps it out"


def test_it_installs_the_gpu_extra_and_checks_the_import():
    (run,) = instructions("RUN")
    assert re.search(r'pip install .*"\.\[[^\]]*\bgpu\b[^\]]*\]"', run)
    assert "import orchestrator.app" in run
