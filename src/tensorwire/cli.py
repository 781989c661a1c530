"""The `tensorwire` command: serve a model repository, or export a pickled estimator."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TENSORWIRE_{name}", default)


def _add_serve(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = commands.add_parser("serve", help="serve a model repository over gRPC (Open Inference Protocol)")
    serve.add_argument("repository", nargs="?", help="model repository folder: <name>/<version>/model.npz")
    serve.add_argument("--model-repository", dest="model_repository", help="same as the positional argument (Triton's name)")
    serve.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--grpc-port", type=int, default=int(_env("GRPC_PORT", "8001")), help="gRPC port (default 8001; 0 picks a free one)")
    serve.add_argument("--threads", type=int, default=int(_env("THREADS", "8")), help="gRPC handler threads (default 8)")
    serve.add_argument("--grace-period", type=float, default=float(_env("GRACE_PERIOD", "10")), help="seconds in-flight requests get on shutdown")
    serve.add_argument("--max-receive-mb", type=int, default=int(_env("MAX_RECEIVE_MB", "64")), help="largest request accepted, MiB")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _add_export(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = commands.add_parser("export", help="convert a joblib/pickle file of a fitted estimator to a tensorwire model")
    export.add_argument("model_file", help="a joblib or pickle file of a fitted scikit-learn estimator")
    export.add_argument("version_dir", help="where to write model.npz, e.g. models/fraud/1")
    export.add_argument("--trust-pickle", action="store_true", help="confirm that you trust the file: unpickling runs the code it contains")
    export.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the input and output precision of the model")


def _serve(args: argparse.Namespace) -> int:
    from tensorwire.server.app import ServerConfig, serve_forever

    repository = args.model_repository or args.repository or os.environ.get("TENSORWIRE_MODEL_REPOSITORY")
    if not repository:
        print("tensorwire serve: give the model repository (positional or --model-repository)", file=sys.stderr)
        return 2
    if not os.path.isdir(repository):
        print(f"tensorwire serve: model repository {repository!r} is not a directory", file=sys.stderr)
        return 2
    try:
        config = ServerConfig(
            model_repository=repository,
            host=args.host,
            grpc_port=args.grpc_port,
            threads=args.threads,
            max_receive_bytes=args.max_receive_mb * 1024 * 1024,
            grace_seconds=args.grace_period,
        )
        serve_forever(config)
    except (ValueError, OSError) as exc:
        print(f"tensorwire serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from tensorwire.server.export import export_pickle_file

    try:
        path = export_pickle_file(args.model_file, args.version_dir, trust_pickle=args.trust_pickle, dtype=args.dtype)
    except (ValueError, TypeError, OSError) as exc:
        print(f"tensorwire export: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensorwire", description="Serve scikit-learn models over the Open Inference Protocol.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_export(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return {"serve": _serve, "export": _export}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
