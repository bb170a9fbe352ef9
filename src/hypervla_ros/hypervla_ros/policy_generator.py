"""policy_generator: serves GeneratePolicy. Instruction (+ first frame) -> generated task-policy weights.

Holds the hypernetwork and the language encoder; runs once per task, never in the control loop.
"""
from __future__ import annotations

import array
import hashlib
import time
from collections import OrderedDict

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from hypervla_core import signing
from hypervla_core.runtime import Generator, InputError
from rclpy.node import Node

from hypervla_msgs.srv import GeneratePolicy

from .image_conversion import ImageError, image_to_rgb
from .node_config import Window, declare, node_defaults, resolve_path
from .node_runtime import diagnostics, run
from .policy_msgs import to_msg

SCHEMA = {
    "checkpoint": ("checkpoint folder (config.json, model.safetensors, stats.json)", None),
    "device": ("torch device for the hypernetwork and language encoder: cpu or cuda", None),
    "cache_size": ("generated policies kept in the LRU cache", (0, 10000)),
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
        self.cache: OrderedDict[tuple, object] = OrderedDict()
        self.hits = self.misses = self.failures = 0
        self.gen_ms = Window(500)
        self.srv = self.create_service(GeneratePolicy, self.p["service_name"], self.on_request)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p["diagnostics_period_s"], self.publish_diagnostics)

    def on_request(self, request, response):
        try:
            if len(request.instruction) > self.p["max_instruction_chars"]:
                raise InputError(f"instruction of {len(request.instruction)} characters exceeds "
                                 f"{self.p['max_instruction_chars']}")
            first, image_key = None, b""
            if request.has_first_image:
                if len(request.first_image.data) > self.p["max_image_bytes"]:
                    raise InputError(f"first image of {len(request.first_image.data)} bytes exceeds "
                                     f"{self.p['max_image_bytes']}")
                first = image_to_rgb(request.first_image)
                image_key = hashlib.sha256(first.tobytes()).digest()
            key = (" ".join(request.instruction.split()), image_key, self.generator.model_id)
            policy = self.cache.get(key)
            if policy is not None:
                self.cache.move_to_end(key)
                self.hits += 1
            else:
                policy = self.generator.generate(request.instruction, first)
                self.misses += 1
                self.gen_ms.add(policy.generation_time_ms)
                if self.p["cache_size"] > 0:
                    self.cache[key] = policy
                    while len(self.cache) > self.p["cache_size"]:
                        self.cache.popitem(last=False)
            response.policy = to_msg(policy, self.get_clock().now().to_msg())
            if self.key is not None:
                response.policy.signer, signature = signing.sign(self.key, policy)
                response.policy.signature = array.array("B", signature)
            response.success, response.message = True, ""
        except (InputError, ImageError) as exc:
            self.failures += 1
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"rejected request: {exc}")
        except Exception as exc:  # a failed generation must not take the service down
            self.failures += 1
            response.success, response.message = False, f"generation failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(response.message)
        return response

    def publish_diagnostics(self):
        values = {
            "model_id": self.generator.model_id, "device": self.p["device"],
            "cache_entries": len(self.cache), "cache_hits": self.hits, "cache_misses": self.misses,
            "failures": self.failures, "generation_ms_p50": f"{self.gen_ms.percentile(50):.2f}",
            "generation_ms_p99": f"{self.gen_ms.percentile(99):.2f}",
        }
        msg = diagnostics(self, "hypervla: policy_generator", self.generator.model_id, DiagnosticStatus.OK, "ready",
                          values)
        self.diag_pub.publish(msg)


def main(args=None):
    run(PolicyGeneratorNode, "policy_generator", args)


if __name__ == "__main__":
    main()
