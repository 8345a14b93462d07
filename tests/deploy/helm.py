"""The helm binary for the chart tests and a render helper.  `make test` fetches helm
(tools/fetch_helm.py) into $AUGSERVE_CACHE_DIR/bin and exports AUGSERVE_HELM."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.serving import REPO_ROOT
from replicas.config import cache_dir

CHART = REPO_ROOT / "k8s" / "charts" / "augserve"
THREE_CLASSES = REPO_ROOT / "k8s" / "values" / "three-gpu-classes.yaml"


def helm_path() -> Path:
    path = Path(os.environ.get("AUGSERVE_HELM") or cache_dir() / "bin" / "helm")
    if not path.is_file():
        pytest.fail(f"no helm binary at {path}: `make test` fetches it "
                    "(python tools/fetch_helm.py $AUGSERVE_CACHE_DIR/bin), or set AUGSERVE_HELM")
    return path


def helm(*args: str | Path) -> subprocess.CompletedProcess:
    home = cache_dir() / "helm-home"  # not the user's helm repositories and plugins
    env = {**os.environ, **{f"HELM_{part.upper()}_HOME": str(home / part)
                            for part in ("cache", "config", "data")}}
    return subprocess.run([str(helm_path()), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def render(*values: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    """The chart's objects (``helm template``) with these values files."""
    args = ["template", "augserve", CHART, "--namespace", "serving", *extra]
    for v in values:
        args += ["-f", v]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def write_values(tmp_path: Path, values: dict, name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path
