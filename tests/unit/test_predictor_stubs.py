"""The committed gRPC stubs are what `make proto` generates from predictor.proto."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO = "predictor_service/proto/predictor.proto"


def test_committed_stubs_match_the_proto(tmp_path):
    (tmp_path / "predictor_service" / "proto").mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                        str(tmp_path / PROTO)]) == 0
    for name in ("predictor_pb2.py", "predictor_pb2.pyi", "predictor_pb2_grpc.py"):
        generated = (tmp_path / "predictor_service" / "proto" / name).read_text()
        committed = (ROOT / "predictor_service" / "proto" / name).read_text()
        assert generated == committed, f"{name} is stale: run `make proto`"
