"""Regenerate the gRPC modules of this package from ``proto/eventstore.proto``.

Usage: ``python -m hydra._proto.generate [--out DIR]`` (default: this package).
Needs grpcio-tools, a development-only dependency.

protoc writes ``import eventstore_pb2`` into the service module, which only works
when the module's directory is on ``sys.path``; the one import line is rewritten to
a package-relative import so the module works as ``hydra._proto.eventstore_pb2_grpc``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parent.parent / "proto"
PROTO_NAME = "eventstore.proto"
OUTPUTS = ("eventstore_pb2.py", "eventstore_pb2.pyi", "eventstore_pb2_grpc.py")
_ABSOLUTE_IMPORT = "import eventstore_pb2 as eventstore__pb2\n"
_RELATIVE_IMPORT = "from . import eventstore_pb2 as eventstore__pb2\n"


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Compile the proto into ``out_dir`` and return the files written."""
    from grpc_tools import protoc  # development-only dependency

    # grpc_tools ships the well-known types (google/protobuf/*.proto) beside itself.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        status = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(proto_dir / PROTO_NAME),
        ])
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status}")
        service = Path(tmp, "eventstore_pb2_grpc.py")
        text = service.read_text()
        if text.count(_ABSOLUTE_IMPORT) != 1:
            raise RuntimeError("unexpected import layout in the generated service module")
        service.write_text(text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            target = out_dir / name
            # Write then rename: an importing process never sees half a module.
            partial = target.with_suffix(target.suffix + ".tmp")
            partial.write_bytes(Path(tmp, name).read_bytes())
            os.replace(partial, target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydra._proto.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR,
                        help="directory to write the modules into (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
