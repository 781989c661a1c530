"""Regenerate protos/inference_pb2.py (and .pyi) from protos/inference.proto.

    python scripts/generate_protos.py            # rewrite the committed modules
    python scripts/generate_protos.py --check    # exit 1 if they are stale

The generated module is rewritten to register its descriptors in tensorwire's
private descriptor pool instead of protobuf's default one: tritonclient and
MLServer register the same `inference.*` names there, and two registrations of
one name crash the import ("duplicate symbol").
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PROTO_FILE = "inference.proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi")

_DEFAULT_POOL = "_descriptor_pool.Default()"
_PRIVATE_POOL = "_private_pool.POOL"
_POOL_IMPORT = "from tensorwire.protos import descriptors as _private_pool\n"


def generate(out_dir: pathlib.Path) -> None:
    """Run protoc on the proto file and write the rewritten modules into out_dir."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        status = protoc.main(
            ["protoc", f"-I{PROTOS}", f"--python_out={tmp}", f"--pyi_out={tmp}", str(PROTOS / PROTO_FILE)]
        )
        if status != 0:
            raise SystemExit(f"protoc failed with status {status}")
        module = (pathlib.Path(tmp) / GENERATED[0]).read_text()
        stub = (pathlib.Path(tmp) / GENERATED[1]).read_text()
    if module.count(_DEFAULT_POOL) != 1:
        raise SystemExit("generated module no longer registers in the default pool once; update this script")
    module = module.replace(_DEFAULT_POOL, _PRIVATE_POOL)
    module = module.replace("from google.protobuf.internal import builder as _builder\n",
                            "from google.protobuf.internal import builder as _builder\n" + _POOL_IMPORT)
    (out_dir / GENERATED[0]).write_text(module)
    (out_dir / GENERATED[1]).write_text(stub)


def stale_files() -> list[str]:
    """Names of the committed generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        return [name for name in GENERATED
                if (pathlib.Path(tmp) / name).read_text() != (PROTOS / name).read_text()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether the modules are stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: protos/{name}; run python scripts/generate_protos.py", file=sys.stderr)
        return 1 if stale else 0
    generate(PROTOS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
