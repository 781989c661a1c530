"""A load-generating client process for the multi-process tests (run as a script, not collected).

    python tests/load_client.py URL MODEL N_FEATURES DTYPE STOP_FILE RESULT_FILE [CHANNELS]

Sends requests in a closed loop until STOP_FILE exists, then writes
{"ok": n, "failures": [[status, details], ...]} to RESULT_FILE. After its first
answer it creates RESULT_FILE.started, so a test knows the load is running.
"""

from __future__ import annotations

import json
import os
import sys

import grpc
import numpy as np

from tensorwire.client._requests import build_infer_request
from tensorwire.protos import inference_pb2 as pb


def main() -> None:
    url, model, n_features, dtype, stop_file, result_file = sys.argv[1:7]
    channels = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    request = build_infer_request(model, np.random.default_rng(0).standard_normal((4, int(n_features))).astype(dtype))
    calls = []
    for i in range(channels):
        channel = grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1), ("tensorwire.channel", i)])
        calls.append(channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString, response_deserializer=pb.ModelInferResponse.FromString))
    ok, failures, i = 0, [], 0
    while not os.path.exists(stop_file):
        try:
            # wait_for_ready: a channel whose worker died waits for its reconnection instead of
            # failing fast while it backs off; only the requests in flight on that worker fail
            calls[i % channels](request, timeout=10, wait_for_ready=True)
            ok += 1
            if ok == 1:
                open(result_file + ".started", "w").close()  # tells the test the load is on
        except grpc.RpcError as error:
            failures.append([error.code().name, error.details()])
        i += 1
    with open(result_file, "w") as out:
        json.dump({"ok": ok, "failures": failures}, out)


if __name__ == "__main__":
    main()
