"""policy_generator: serves GeneratePolicy. Instruction (+ first frame) -> generated task-policy weights.

Holds the hypernetwork and the language encoder; runs once per task, never in the control loop. One generator
serves many robots: requests go to `hypervla_core.serving.PolicyServer` (cache, bounded queue, batched
generation on a worker thread); every request gets an answer, a policy or a refusal that says why.
"""
from __future__ import annotations

import array
import queue
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from hypervla_core import signing
from hypervla_core.runtime import Generator, InputError
from hypervla_core.serving import Busy, PolicyServer, ServeConfig
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from hypervla_msgs.srv import GeneratePolicy

from .image_conversion import ImageError, image_to_rgb
from .node_config import declare, node_defaults, resolve_path
from .node_runtime import diagnostics, run
from .policy_msgs import to_msg

SCHEMA = {
    "checkpoint": ("checkpoint folder (config.json, model.safetensors, stats.json)", None),
    "device": ("torch device for the hypernetwork and language encoder: cpu or cuda", None),
    "cache_size": ("generated policies kept in the LRU cache", (0, 10000)),
    "max_queued": ("requests waiting for generation beyond this are refused as busy", (0, 100000)),
    "max_batch": ("requests generated together in one pass (1 = one at a time)", (1, 1024)),
    "service_queue_depth": ("DDS history of the service's request reader (requests not yet taken)", (1, 100000)),
    "max_instruction_chars": ("longest instruction accepted", (1, 100000)),
    "max_image_bytes": ("largest first image accepted, in bytes", (1, 1 << 30)),
    "service_name": ("name of the GeneratePolicy service", None),
    "diagnostics_period_s": ("seconds between /diagnostics messages", (0.1, 60.0)),
    "torch_threads": ("intra-op threads for generation (0 = torch default)", (0, 64)),
    "signing_key_file": ("Ed25519 private key that signs every policy ('' = unsigned; `hypervla keygen`)", None),
}


class PolicyGeneratorNode(Node):
    def __init__(self):
        super().__init__("policy_generator")
        self.p = declare(self, SCHEMA, node_defaults("policy_generator"))
        if self.p["torch_threads"]:
            import torch

            torch.set_num_threads(self.p["torch_threads"])
        start = time.perf_counter()
        self.generator = Generator.load(resolve_path(self.p["checkpoint"]), device=self.p["device"])
        key_file = self.p["signing_key_file"]
        self.key = signing.load_private(resolve_path(key_file)) if key_file else None
        self.signer = signing.key_id(self.key.public_key()) if self.key else ""
        self.get_logger().info(f"loaded model {self.generator.model_id} in {time.perf_counter() - start:.1f} s; "
                               + (f"signing with key {self.signer}" if self.key else "policies are NOT signed"))
        self.server = PolicyServer(self.generator, ServeConfig(
            cache_size=self.p["cache_size"], max_queued=self.p["max_queued"], max_batch=self.p["max_batch"]))
        self.rejected, self.closing = 0, False
        self.worker = threading.Thread(target=self.server.serve_forever, name="generation", daemon=True)
        self.worker.start()
        # The default service QoS keeps 10 requests: a burst of 50 lost most of them without a word.
        qos = QoSProfile(depth=self.p["service_queue_depth"], reliability=ReliabilityPolicy.RELIABLE)
        self.srv = self.create_service(GeneratePolicy, self.p["service_name"], self.on_request, qos_profile=qos)
        # rclpy hands the request header only to send_response, which it calls when the callback returns; a
        # request still generating keeps its header here and is answered later, on this (the executor's) thread.
        self._send = self.srv.send_response
        self.srv.send_response = self._send_or_defer
        self.deferred: dict[int, object] = {}
        self.ready: queue.SimpleQueue = queue.SimpleQueue()
        self.wake = self.create_guard_condition(self._send_ready)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p["diagnostics_period_s"], self.publish_diagnostics)

    def on_request(self, request, response):
        try:
            if len(request.instruction) > self.p["max_instruction_chars"]:
                raise InputError(f"instruction of {len(request.instruction)} characters exceeds "
                                 f"{self.p['max_instruction_chars']}")
            first = None
            if request.has_first_image:
                if len(request.first_image.data) > self.p["max_image_bytes"]:
                    raise InputError(f"first image of {len(request.first_image.data)} bytes exceeds "
                                     f"{self.p['max_image_bytes']}")
                first = image_to_rgb(request.first_image)
            future = self.server.submit(request.instruction, first)
        except (InputError, ImageError) as exc:
            self.rejected += 1
            self.get_logger().warning(f"rejected request: {exc}")
            return self._fill(response, exc)
        except Busy as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=1.0)
            return self._fill(response, exc)
        if future.done():  # from the cache
            return self._fill(response, future)
        self.deferred[id(response)] = future
        return response

    def _send_or_defer(self, response, header) -> None:
        future = self.deferred.pop(id(response), None)
        if future is None:
            self._send(response, header)
            return

        def done(f, response=response, header=header):  # on the worker thread: hand over to the executor's
            if not self.closing:  # the executor no longer spins: nothing can be sent
                self.ready.put((response, header, f))
                self.wake.trigger()

        future.add_done_callback(done)

    def _send_ready(self) -> None:
        while True:
            try:
                response, header, future = self.ready.get_nowait()
            except queue.Empty:
                return
            self._send(self._fill(response, future), header)

    def _fill(self, response, outcome):
        """A policy (signed) from a done future, or the reason it failed."""
        try:
            if isinstance(outcome, Exception):
                raise outcome
            policy = outcome.result()
            response.policy = to_msg(policy, self.get_clock().now().to_msg())
            if self.key is not None:
                response.policy.signer, signature = signing.sign(self.key, policy)
                response.policy.signature = array.array("B", signature)
            response.success, response.message = True, ""
        except (InputError, ImageError, Busy) as exc:
            response.success, response.message = False, str(exc)
        except Exception as exc:  # a failed generation must not take the service down
            response.success, response.message = False, f"generation failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(response.message)
        return response

    def publish_diagnostics(self):
        s = self.server.snapshot()
        values = {
            "model_id": self.generator.model_id, "device": self.p["device"], "max_batch": self.p["max_batch"],
            "max_queued": self.p["max_queued"], "queued_now": s["queued_now"], "generating_now": s["generating_now"],
            "queued": s["queued"], "joined": s["joined"], "refused_busy": s["refused_busy"],
            "answered": s["answered"], "rejected": self.rejected, "failed": s["failed"],
            "batches": s["batches"], "batched_requests": s["batched_requests"],
            "cache_entries": s["cache_entries"], "cache_hits": s["cache_hits"],
            "generation_ms_p50": f"{s['generation_ms_p50']:.2f}", "generation_ms_p99": f"{s['generation_ms_p99']:.2f}",
        }
        busy = s["queued_now"] >= self.p["max_queued"]
        msg = diagnostics(self, "hypervla: policy_generator", self.generator.model_id,
                          DiagnosticStatus.WARN if busy else DiagnosticStatus.OK,
                          "busy: queue full" if busy else "ready", values)
        self.diag_pub.publish(msg)

    def close(self):
        self.closing = True
        self.server.close()
        self.worker.join(5.0)


def main(args=None):
    run(PolicyGeneratorNode, "policy_generator", args)


if __name__ == "__main__":
    main()
