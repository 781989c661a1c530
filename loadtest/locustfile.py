"""Locust scenarios for tensorwire, or any Open Inference Protocol gRPC server.

    locust -f loadtest/locustfile.py --headless -u 32 -r 8 -t 60s --host localhost:8001

With no options every scenario discovers what the server serves (repository
index, then each ready model's metadata) and sends random valid inputs. The
`--tw-*` options narrow the models, batch sizes and mode; the scenarios are
user classes (name them after the options to run only those) and tags
(`--tags stream`, ...). loadtest/README.md has more.

    UnarySmallBatch   unary ModelInfer, --tw-batch rows           tags: unary, small
    UnaryLargeBatch   unary ModelInfer, --tw-large-batch rows     tags: unary, large
    Streaming         one long-lived ModelStreamInfer per user    tags: stream
    MixedModels       a random model and batch size per request   tags: mix
    ReloadUnderLoad   RepositoryModelLoad every --tw-reload-every seconds, while the others infer;
                      runs only when named as a class or selected with --tags reload
"""

from __future__ import annotations

import argparse
import itertools
import random
from typing import Any

from locust import constant, events, tag, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.exception import StopUser  # noqa: E402

from tensorwire.loadtest.grpc_user import GrpcUser, ModelTarget  # first: it readies gRPC for gevent
from tensorwire.protos import inference_pb2 as pb  # noqa: E402

MODES = ("any", "unary", "stream")


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    group = parser.add_argument_group("tensorwire", "what the scenarios send (Locust passes these on to its workers)")
    group.add_argument("--tw-models", default="", help="comma-separated models to load (default: every ready model the server lists)")
    group.add_argument("--tw-batch", type=int, default=1, help="rows per request of the small-batch scenarios (default 1)")
    group.add_argument("--tw-large-batch", type=int, default=256, help="rows per request of the large-batch scenario (default 256)")
    group.add_argument("--tw-mode", choices=MODES, default="any", help="unary or stream: run only the scenarios of that mode (default any)")
    group.add_argument("--tw-reload-model", default="", help="model that ReloadUnderLoad reloads (default: the first model loaded)")
    group.add_argument("--tw-reload-every", type=float, default=5.0, help="seconds between two reloads (default 5)")
    group.add_argument("--tw-timeout", type=float, default=10.0, help="per-call deadline, seconds (default 10)")


@events.init.add_listener
def leave_reload_out_unless_asked(environment: Environment, **_: Any) -> None:
    """Reloading is an operator's act that some servers refuse: run it only when named or tagged.

    Workers keep every class: the master decides which to spawn.
    """
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):
        return
    asked = bool(getattr(options, "user_classes", None)) or "reload" in (getattr(options, "tags", None) or [])
    if not asked and ReloadUnderLoad in environment.user_classes:
        environment.user_classes.remove(ReloadUnderLoad)


def _stop(user: Any) -> None:
    raise StopUser()


class Scenario(GrpcUser):
    """What the scenarios share: options, discovery, and standing down when the mode or tags leave them out."""

    abstract = True
    wait_time = constant(0)  # closed loop: the next request leaves when the answer is in
    mode = "any"
    _counter = itertools.count()

    def on_start(self) -> None:
        options = self.options
        self.timeout_s = options.tw_timeout
        wanted = options.tw_mode
        if not self.tasks or (wanted != "any" and self.mode not in ("any", wanted)):
            self.tasks = [_stop]  # filtered out by --tags or --tw-mode: stand down quietly
            return
        only = [m.strip() for m in options.tw_models.split(",") if m.strip()]
        self.models = self.discover(only)
        if not self.models:
            self.tasks = [_stop]
            return
        # users of a single-model scenario spread over the models, one model each
        self.model: ModelTarget = self.models[next(self._counter) % len(self.models)]

    @property
    def options(self) -> argparse.Namespace:
        options = self.environment.parsed_options
        if options is None:  # run as a library without Locust's parser: the defaults
            parser = argparse.ArgumentParser()
            add_options(parser)
            options = parser.parse_args([])
        return options


class UnarySmallBatch(Scenario):
    weight = 4
    mode = "unary"

    @tag("unary", "small")
    @task
    def infer_small_batch(self) -> None:
        self.infer(self.model, self.options.tw_batch)


class UnaryLargeBatch(Scenario):
    weight = 1
    mode = "unary"

    @tag("unary", "large")
    @task
    def infer_large_batch(self) -> None:
        self.infer(self.model, self.options.tw_large_batch)


class Streaming(Scenario):
    weight = 2
    mode = "stream"

    @tag("stream")
    @task
    def stream_small_batch(self) -> None:
        self.stream_infer(self.model, self.options.tw_batch)


class MixedModels(Scenario):
    """Every request to a random model, with a small or a large batch; unary unless --tw-mode stream."""

    weight = 2

    @tag("mix")
    @task
    def infer_any_model(self) -> None:
        target = random.choice(self.models)
        batch = random.choice((self.options.tw_batch, self.options.tw_large_batch))
        if self.options.tw_mode == "stream":
            self.stream_infer(target, batch)
        else:
            self.infer(target, batch)


class ReloadUnderLoad(Scenario):
    """One user that reloads a model (RepositoryModelLoad) again and again while the other users infer."""

    fixed_count = 1

    def wait_time(self) -> float:
        return float(self.options.tw_reload_every)

    @tag("reload")
    @task
    def reload_model(self) -> None:
        name = self.options.tw_reload_model or self.models[0].name
        self.call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name), name=name, model=name)
