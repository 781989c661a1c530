"""The `tensorwire` command: serve a model repository, export a model, or warm the kernel cache."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
from typing import Any

from tensorwire.server.version import VERSION

ENVIRONMENT_NOTE = (
    "Every flag can also be set as an environment variable TENSORWIRE_<NAME>, its name in capitals with "
    "dashes as underscores (TENSORWIRE_WORKERS=4, TENSORWIRE_GRPC_USE_SSL=1, TENSORWIRE_LOAD_MODEL=a,b); a flag "
    "given on the command line wins. One exception: --auth-tokens FILE is TENSORWIRE_AUTH_TOKENS_FILE, because "
    "TENSORWIRE_AUTH_TOKENS holds the tokens themselves."
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TENSORWIRE_{name}", default)


class _HelpWithDefaults(argparse.HelpFormatter):
    """Appends each option's default to its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return help_text
        return f"{help_text} (default: %(default)s)"


def _add_serve(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = commands.add_parser(
        "serve", help="serve a model repository over gRPC (Open Inference Protocol)", epilog=ENVIRONMENT_NOTE, formatter_class=_HelpWithDefaults
    )
    serve.add_argument("repository", nargs="?", help="model repository folder: <name>/<version>/model.npz")
    serve.add_argument("--model-repository", dest="model_repository", help="same as the positional argument (Triton's name)")
    serve.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--grpc-port", type=int, default=int(_env("GRPC_PORT", "8001")), help="gRPC port (default 8001; 0 picks a free one)")
    serve.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "8002")), help="Prometheus metrics port (default 8002; 0: off)")
    serve.add_argument("--metrics-host", default=_env("METRICS_HOST", "") or None, help="address the metrics listen on (default: --host); 127.0.0.1 keeps them to this machine")
    serve.add_argument("--workers", type=int, default=int(_env("WORKERS", str(os.cpu_count() or 1))), help="worker processes (default: one per CPU)")
    serve.add_argument("--threads", type=int, default=int(_env("THREADS", "8")), help="threads per worker: for every RPC (sync engine), or for large inference requests and the other RPCs (aio engine) (default 8)")
    serve.add_argument("--engine", default=_env("ENGINE", "auto"), choices=["auto", "aio", "sync"],
                       help="gRPC server kind: aio (an event loop), sync (a thread pool), or auto (the default): sync when --workers is at least the CPU count, else aio")
    serve.add_argument("--model-control-mode", default=_env("MODEL_CONTROL_MODE", "none"), choices=["none", "explicit", "poll"],
                       help="none: serve what is there at start; explicit: load/unload by API (and --load-model); poll: follow the repository")
    serve.add_argument("--load-model", action="append", metavar="NAME", help="explicit mode: load this model at start ('*' for all); repeatable")
    serve.add_argument("--repository-poll-secs", type=float, default=float(_env("REPOSITORY_POLL_SECS", "5")), help="poll mode: seconds between scans")
    serve.add_argument("--grace-period", type=float, default=float(_env("GRACE_PERIOD", "10")), help="seconds in-flight requests get on shutdown")
    serve.add_argument("--max-receive-mb", type=int, default=int(_env("MAX_RECEIVE_MB", "64")), help="largest request accepted, MiB")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="the least severe log lines written (DEBUG adds one line per cancelled stream and similar)")
    serve.add_argument("--log-format", default=_env("LOG_FORMAT", "text"), choices=["text", "json"],
                       help="text lines, or one JSON object per line for log collectors")
    security = serve.add_argument_group("security and limits")
    security.add_argument("--grpc-use-ssl", action="store_true", default=_env("GRPC_USE_SSL", "") == "1", help="serve TLS (needs cert and key)")
    security.add_argument("--grpc-server-cert", default=_env("GRPC_SERVER_CERT", "") or None, help="PEM certificate chain of the server")
    security.add_argument("--grpc-server-key", default=_env("GRPC_SERVER_KEY", "") or None, help="PEM private key of the server")
    security.add_argument("--grpc-root-cert", default=_env("GRPC_ROOT_CERT", "") or None, help="PEM CA certificate that signs client certificates")
    security.add_argument("--grpc-use-ssl-mutual", action="store_true", default=_env("GRPC_USE_SSL_MUTUAL", "") == "1", help="require client certificates")
    security.add_argument("--metrics-use-ssl", action="store_true", default=_env("METRICS_USE_SSL", "") == "1",
                          help="serve the metrics over HTTPS with the gRPC certificate and key (and, with --grpc-use-ssl-mutual, require client certificates there too)")
    security.add_argument("--auth-tokens", default=_env("AUTH_TOKENS_FILE", "") or None, metavar="FILE",
                          help="require bearer tokens: '<scope> <token>' per line, scopes infer and admin (or set TENSORWIRE_AUTH_TOKENS)")
    security.add_argument("--grpc-max-connection-age", type=float, default=float(_env("GRPC_MAX_CONNECTION_AGE", "0")), metavar="SECONDS",
                          help="close each connection gracefully after this long (0: never), so clients re-resolve and rebalance")
    security.add_argument("--max-inflight", type=int, default=int(_env("MAX_INFLIGHT", "256")), help="concurrent unary calls per worker before RESOURCE_EXHAUSTED (probes have a reserve of their own; default 256)")
    security.add_argument("--max-streams", type=int, default=int(_env("MAX_STREAMS", "64")), help="open ModelStreamInfer streams per worker before RESOURCE_EXHAUSTED (default 64)")
    security.add_argument("--stream-idle-timeout", type=float, default=float(_env("STREAM_IDLE_TIMEOUT", "300")), metavar="SECONDS",
                          help="close a ModelStreamInfer stream that sends no request for this long (default 300)")
    security.add_argument("--max-health-watches", type=int, default=int(_env("MAX_HEALTH_WATCHES", "32")), help="open grpc.health Watch calls per worker (default 32)")
    security.add_argument("--max-streams-per-connection", type=int, default=int(_env("MAX_STREAMS_PER_CONNECTION", "100")),
                          help="concurrent calls on one HTTP/2 connection (default 100)")
    security.add_argument("--max-rows", type=int, default=int(_env("MAX_ROWS", "1000000")), help="rows per request")
    security.add_argument("--max-model-mb", type=int, default=int(_env("MAX_MODEL_MB", "4096")), help="largest model.npz loaded, MiB")
    security.add_argument("--follow-symlinks", action="store_true", default=_env("FOLLOW_SYMLINKS", "") == "1",
                          help="serve model folders and files that are symbolic links out of the repository root (refused by default)")


def _add_export(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = commands.add_parser("export", help="convert a model file (XGBoost JSON/UBJ, LightGBM text, or a trusted joblib/pickle file) to a tensorwire model")
    export.add_argument("model_file", help="an XGBoost model.json/.ubj or LightGBM model.txt (read as data), or a joblib/pickle file of a fitted estimator")
    export.add_argument("version_dir", help="where to write model.npz, e.g. models/fraud/1")
    export.add_argument(
        "--from", dest="source", choices=["xgboost", "lightgbm", "joblib"], default=None,
        help="the file's kind (default: recognised from its content; anything not XGBoost or LightGBM is taken as joblib)",
    )
    export.add_argument("--trust-pickle", action="store_true", help="confirm that you trust a joblib/pickle file: unpickling runs the code it contains")
    export.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the input and output precision of the model")
    export.add_argument("--force", action="store_true", help="replace the model in version_dir if there is one (refused by default)")
    export.add_argument(
        "--background", default=None, metavar="PATH",
        help="training rows (rows x features, the model's input columns in its order) as a .npy file or a .csv file of numbers "
        "(an empty cell or NaN is a missing value; a first row that is not all numbers is a header, whose names name the features "
        "of an XGBoost or LightGBM model in the drift metrics): the model then stores the reference profile the server measures "
        "input and output drift against (see `tensorwire drift`)",
    )


def _serve(args: argparse.Namespace) -> int:
    repository = args.model_repository or args.repository or os.environ.get("TENSORWIRE_MODEL_REPOSITORY")
    if not repository:
        print("tensorwire serve: give the model repository (positional or --model-repository)", file=sys.stderr)
        return 2
    if not os.path.isdir(repository):
        print(f"tensorwire serve: model repository {repository!r} is not a directory", file=sys.stderr)
        return 2
    # BLAS pools size themselves when numpy loads: cap them before it does, or every worker
    # process spawns one thread per core and they fight (kernels call BLAS through numba).
    threads = os.environ.get("TENSORWIRE_KERNEL_THREADS", "1")
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)
    from tensorwire.server.config import ServerConfig
    from tensorwire.server.process.logs import configure_logging
    from tensorwire.server.transport.tokens import check_security_files

    configure_logging(args.log_level, args.log_format, "main" if args.workers == 1 else "supervisor")
    # the `tensorwire warm` processes that compile a cold cache beside the server log as it does
    os.environ["TENSORWIRE_LOG_LEVEL"], os.environ["TENSORWIRE_LOG_FORMAT"] = args.log_level, args.log_format
    try:
        config = ServerConfig(
            model_repository=repository,
            host=args.host,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            metrics_tls=args.metrics_use_ssl,
            workers=args.workers,
            threads=args.threads,
            engine=args.engine,
            max_receive_bytes=args.max_receive_mb * 1024 * 1024,
            grace_seconds=args.grace_period,
            model_control_mode=args.model_control_mode,
            load_models=tuple(args.load_model or [name for name in _env("LOAD_MODEL", "").split(",") if name]),
            poll_seconds=args.repository_poll_secs,
            tls_cert=args.grpc_server_cert if args.grpc_use_ssl or args.grpc_use_ssl_mutual else None,
            tls_key=args.grpc_server_key if args.grpc_use_ssl or args.grpc_use_ssl_mutual else None,
            tls_root=args.grpc_root_cert,
            tls_mutual=args.grpc_use_ssl_mutual,
            auth_tokens=args.auth_tokens if args.auth_tokens else ("" if os.environ.get("TENSORWIRE_AUTH_TOKENS") else None),
            max_inflight=args.max_inflight,
            max_streams=args.max_streams,
            stream_idle_seconds=args.stream_idle_timeout,
            max_health_watches=args.max_health_watches,
            max_streams_per_connection=args.max_streams_per_connection,
            max_rows=args.max_rows,
            max_model_bytes=args.max_model_mb * 1024 * 1024,
            follow_symlinks=args.follow_symlinks,
            max_connection_age_seconds=args.grpc_max_connection_age,
        )
        if (args.grpc_use_ssl or args.grpc_use_ssl_mutual) and config.tls_cert is None:
            raise ValueError("--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key")
        check_security_files(config.tls(), config.auth_tokens)
    except ValueError as exc:
        print(f"tensorwire serve: {exc}", file=sys.stderr)
        return 1
    try:
        if config.workers == 1:
            from tensorwire.server.process.app import serve_single_process

            serve_single_process(config)
        else:
            from tensorwire.server.process.supervisor import Supervisor

            Supervisor(config, log_level=args.log_level, log_format=args.log_format).run()
    except OSError as exc:
        print(f"tensorwire serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from tensorwire.server.modeling.export import export_file

    version_dir = pathlib.Path(args.version_dir)
    if version_dir.is_dir() and any(version_dir.iterdir()) and not args.force:
        print(f"tensorwire export: {version_dir} is not empty; a served version is replaced only with --force (or use a new version number)", file=sys.stderr)
        return 1
    try:
        background, names = (None, None) if args.background is None else read_background(args.background)
        path = export_file(
            args.model_file, args.version_dir, source=args.source, trust_pickle=args.trust_pickle, dtype=args.dtype, background=background, feature_names=names
        )
    except (ValueError, TypeError, OSError) as exc:
        print(f"tensorwire export: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def read_background(path: str) -> tuple[Any, list[str] | None]:
    """(rows, header names or None) of a .npy or .csv file of training rows, for `export --background`."""
    import csv

    import numpy as np

    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if not path.endswith(".csv"):
        raise ValueError(f"--background must be a .npy or .csv file, not {path!r}")
    with open(path, newline="") as fh:
        lines = [line for line in csv.reader(fh) if line]
    names = None
    if lines and not all(_is_number(cell) for cell in lines[0]):
        names, lines = [cell.strip() for cell in lines[0]], lines[1:]
    try:
        rows = np.array([[float(cell) if cell.strip() else np.nan for cell in line] for line in lines], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: every row after the header must hold numbers ({exc})") from None
    return rows, names


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return not cell.strip()  # an empty cell is a missing value
    return True


def _add_warm(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    warm = commands.add_parser(
        "warm",
        help="compile every model's kernels into numba's cache, so that the server's first start loads them instead",
        description="Run once per install (or image build), as the user that serves, with the NUMBA_CACHE_DIR, NUMBA_CPU_NAME and "
        "TENSORWIRE_KERNEL_THREADS the server will have. Exits 1 if a model does not load or nothing was cached.",
    )
    warm.add_argument("model_repository", help="the model repository to compile, e.g. models/")
    warm.add_argument("--model", action="append", default=None, help="compile only this model (repeatable; default: every model)")
    warm.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes that compile at once (default: one per CPU)")
    warm.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="as serve's (default: INFO)")
    warm.add_argument("--log-format", default=_env("LOG_FORMAT", "text"), choices=["text", "json"], help="as serve's (default: text)")


def _warm(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.model_repository):
        print(f"tensorwire warm: model repository {args.model_repository!r} is not a directory", file=sys.stderr)
        return 2
    import numba

    from tensorwire.server.process.logs import configure_logging
    from tensorwire.server.repository.cache_warming import warm_repository

    configure_logging(args.log_level, args.log_format, "warm")

    report = warm_repository(args.model_repository, args.model, max(1, args.processes))
    where = f"{report.cached_kernels} kernels cached in {report.cache_dir}" if report.cache_dir else "kernels cached beside the installed package"
    print(f"warmed {report.ready} model versions in {report.seconds:.1f}s: {where} for CPU {numba.config.CPU_NAME or 'host'}")
    for failure in report.failures:
        print(f"tensorwire warm: {failure}", file=sys.stderr)
    if report.ready == 0:
        print(f"tensorwire warm: no model loaded from {args.model_repository}", file=sys.stderr)
    if report.cached_kernels == 0:
        print(f"tensorwire warm: nothing was written to {report.cache_dir} (is it writable by this user?)", file=sys.stderr)
    return 1 if report.failures or report.ready == 0 or report.cached_kernels == 0 else 0


def _add_drift(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    drift = commands.add_parser(
        "drift",
        help="show a served model's drift: features ranked by PSI, and its main output, with their reference and live bin shares",
        description="Reads the server's Prometheus metrics (tensorwire_feature_psi, tensorwire_feature_bin_fraction, tensorwire_output_psi, "
        "tensorwire_output_bin_fraction). A model has "
        "them when it was exported with background=X_train and its config.json does not say {\"drift\": {\"enabled\": false}}. "
        "PSI under 0.1: stable; 0.1 to 0.25: moving; over 0.25: shifted.",
    )
    drift.add_argument("--url", required=True, help="the metrics endpoint, e.g. http://localhost:8002 (/metrics is added when the URL has no path)")
    drift.add_argument("--model", required=True, help="the model's name")
    drift.add_argument("--version", default=None, help="only this version (default: every version with drift metrics)")
    drift.add_argument("--json", action="store_true", help="print JSON instead of a table")
    drift.add_argument("--plot", default=None, metavar="PNG", help="also draw each feature's reference and live bin shares, ranked by PSI, and the output's, to this PNG file (needs matplotlib)")


DRIFT_BAR_WIDTH = 20
DRIFT_PSI_FULL_BAR = 0.5  # the PSI a full bar stands for (larger ones are cut there)


def _drift(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    if args.plot:
        try:
            import matplotlib
        except ImportError:
            print("tensorwire drift: --plot needs matplotlib, which is not installed (pip install matplotlib)", file=sys.stderr)
            return 2
        matplotlib.use("Agg")  # a file, never a window
    url = args.url if "://" in args.url else f"http://{args.url}"
    if urllib.parse.urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"tensorwire drift: cannot read metrics from {url}: {exc}", file=sys.stderr)
        return 2
    reports = _drift_reports(text, args.model, args.version)
    if reports and args.plot:
        _plot_drift(reports, args.plot)
    if not reports:
        print(
            f"tensorwire drift: {url} has no drift metrics for model '{args.model}'"
            f"{f' version {args.version}' if args.version else ''} (export it with background=X_train, and leave "
            "drift enabled in its config.json)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    for report in reports:
        print(f"model '{report['model']}' version {report['version']}: {report['window_rows']:,} rows in the drift window")
        width = max(len("feature"), *(len(f["feature"]) for f in report["features"]))
        for feature in report["features"]:
            psi = feature["psi"]
            verdict = "no rows yet" if psi is None else "shifted" if psi > 0.25 else "moving" if psi > 0.1 else "stable"
            shown = "  -  " if psi is None else f"{psi:5.3f}"
            print(f"  {feature['feature']:<{width}}  PSI {shown} {_bar(psi or 0.0, DRIFT_PSI_FULL_BAR)} {verdict}"
                  f"  (missing {feature['missing']:g}, below range {feature['below']:g}, above range {feature['above']:g})")
            shown_bins = [row for row in feature["bins"] if row["bin"] != "missing" or row["reference"] or row["live"]]
            _print_bins(shown_bins)
        output = report["output"]
        if output is not None:
            psi = output["psi"]
            verdict = "no rows yet" if psi is None else "shifted" if psi > 0.25 else "moving" if psi > 0.1 else "stable"
            shown = "  -  " if psi is None else f"{psi:5.3f}"
            print(f"  output '{output['name']}'  PSI {shown} {_bar(psi or 0.0, DRIFT_PSI_FULL_BAR)} {verdict}  ({output['window_rows']:,} rows in the window)")
            _print_bins(output["bins"])
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _print_bins(bins: list[dict[str, Any]]) -> None:
    tallest = max([0.01, *(max(row["reference"], row["live"] or 0.0) for row in bins)])  # bars are to scale within a feature
    for row in bins:
        live = row["live"]
        print(f"    bin {row['bin']:>7}  reference {row['reference']:6.1%} {_bar(row['reference'], tallest)}  "
              f"live {'   -  ' if live is None else f'{live:6.1%}'} {_bar(live or 0.0, tallest)}")


def _plot_drift(reports: list[dict[str, Any]], path: str) -> None:
    """One bar chart per feature (reference vs live bin shares, ranked by PSI), then the output's, per version."""
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [
        (f"v{r['version']} {f['feature']}", f["psi"], f["bins"])
        for r in reports
        for f in [*r["features"], *([{"feature": f"output '{r['output']['name']}'", **r["output"]}] if r["output"] else [])]
    ]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, psi, all_bins) in zip(axes.flat, panels):
        bins = [b for b in all_bins if b["bin"] != "missing" or b["reference"] or b["live"]]
        at = np.arange(len(bins))
        ax.bar(at - 0.2, [b["reference"] for b in bins], width=0.4, label="reference")
        ax.bar(at + 0.2, [b["live"] or 0.0 for b in bins], width=0.4, label="live")
        ax.set_xticks(at, [b["bin"] for b in bins], fontsize=7, rotation=45 if len(bins) > 6 else 0)
        ax.set_title(f"{title}: PSI {'-' if psi is None else f'{psi:.3f}'}", fontsize=9)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"model '{reports[0]['model']}': reference vs live bin shares", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _bar(value: float, full: float) -> str:
    cells = round(min(max(value / full, 0.0), 1.0) * DRIFT_BAR_WIDTH)
    return "#" * cells + "." * (DRIFT_BAR_WIDTH - cells)


def _drift_reports(text: str, model: str, version: str | None) -> list[dict[str, Any]]:
    """Per version of the model: its features ranked by PSI (highest first) with their bin shares, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    versions: dict[str, dict[str, Any]] = {}
    features: dict[tuple[str, str], dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or (version is not None and labels.get("version") != version):
                continue
            if sample.name == "tensorwire_drift_window_rows":
                versions.setdefault(labels["version"], {})["window_rows"] = int(sample.value)
                continue
            if sample.name.startswith("tensorwire_output_"):
                output = outputs.setdefault(labels["version"], {"name": "", "psi": None, "window_rows": 0, "bins": {}})
                if sample.name == "tensorwire_output_psi":
                    output["psi"] = sample.value
                elif sample.name == "tensorwire_output_window_rows":
                    output["window_rows"] = int(sample.value)
                elif sample.name == "tensorwire_output_bin_fraction":
                    output["name"] = labels["output"]
                    output["bins"].setdefault(labels["bin"], {"bin": labels["bin"], "reference": 0.0, "live": None})[labels["population"]] = sample.value
                continue
            if "feature" not in labels or not sample.name.startswith("tensorwire_feature_"):
                continue
            entry = features.setdefault((labels["version"], labels["feature"]), {"feature": labels["feature"], "psi": None, "missing": 0.0, "below": 0.0, "above": 0.0, "bins": {}})
            if sample.name == "tensorwire_feature_psi":
                entry["psi"] = sample.value
            elif sample.name == "tensorwire_feature_missing_total":
                entry["missing"] = sample.value
            elif sample.name == "tensorwire_feature_out_of_range_total":
                entry[labels["side"]] = sample.value
            elif sample.name == "tensorwire_feature_bin_fraction":
                entry["bins"].setdefault(labels["bin"], {"bin": labels["bin"], "reference": 0.0, "live": None})[labels["population"]] = sample.value
    reports = []
    for found_version in sorted(versions, key=lambda v: (len(v), v)):
        rows = [{**f, "bins": list(f["bins"].values())} for (v, _), f in features.items() if v == found_version]
        rows.sort(key=lambda f: 1.0 if f["psi"] is None else -float(f["psi"]))
        found = outputs.get(found_version)
        shown_output = None if found is None else {**found, "bins": list(found["bins"].values())}
        reports.append({"model": model, "version": found_version, "window_rows": versions[found_version].get("window_rows", 0), "features": rows, "output": shown_output})
    return reports


BENCH_HELP = "measure throughput and latency of any Open Inference Protocol gRPC server (tensorwire bench --help)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the client's own command line: serving never imports the client, nor grpc's client parts
        from tensorwire.client.bench import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="tensorwire", description="Serve scikit-learn models over the Open Inference Protocol.")
    parser.add_argument("--version", action="version", version=f"tensorwire {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_export(commands)
    _add_warm(commands)
    _add_drift(commands)
    commands.add_parser("bench", help=BENCH_HELP)  # listed here, parsed by tensorwire.client.bench_args
    args = parser.parse_args(argv)
    if args.command not in ("serve", "warm"):
        logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    return {"serve": _serve, "export": _export, "warm": _warm, "drift": _drift}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
