"""ONNX Runtime backend for the control step (Runtime.load(folder, backend="onnxruntime")).

The runtime's act() (shared vision encoder + base policy) is exported once when the runtime loads, with the
generated task tensors as graph inputs, so one graph serves every TaskPolicy and a task switch costs
nothing extra. On this project's CPU it halves the step time against eager PyTorch (docs/benchmarks.md);
outputs match eager to float32 rounding (tested).

The export runs in a child process: the exporter's imports and tracing state would otherwise stay in the
controller for good (about 170 MB of its RSS).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

from .model import VLA


class _Act(torch.nn.Module):
    def __init__(self, model: VLA, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, image, proprio, *task):
        return self.model.act(dict(zip(self.names, task)), image, proprio)


def export_onnx(model: VLA, path: str) -> None:
    """Write act() as an ONNX graph: inputs image, proprio and the task tensors (sorted by name)."""
    cfg = model.cfg
    names = sorted(model.task_spec())
    example = (torch.zeros(1, 3, cfg.image_size, cfg.views * cfg.image_size),
               torch.zeros(1, max(cfg.proprio_dim, 1)),
               *(torch.zeros(1, *model.task_spec()[n]) for n in names))
    # The exporter narrates its passes on stdout and logs and warns about its own internals (optional
    # torchvision ops, deprecations); none of it helps a user. Errors still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_Act(model.eval(), names), example, dynamo=True, verbose=False,
                                    input_names=["image", "proprio", *names], output_names=["chunk", "grip"])
    with open(path, "wb") as f:
        f.write(program.model_proto.SerializeToString())


def _export_in_child(folder: str, model_id: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "act.onnx")
        proc = subprocess.run([sys.executable, "-m", "hypervla_core.onnx_backend", str(folder), model_id, out],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"ONNX export of {folder} failed: {last}")
        with open(out, "rb") as f:
            return f.read()


class OnnxActor:
    """act(task_feed, image (1, 3, S, S) float32, proprio (1, P) float32) -> (chunk, grip) numpy."""

    def __init__(self, folder: str, model_id: str, model: VLA, threads: int = 1):
        import onnxruntime as ort

        self.names = sorted(model.task_spec())
        self.proprio_dim = model.cfg.proprio_dim
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(int(threads), 1)
        options.log_severity_level = 3  # errors only
        # Idle worker threads would spin, taking a core from the generator or simulator beside the controller.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(_export_in_child(folder, model_id), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}  # the exporter drops inputs the graph ignores

    def prepare(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A TaskPolicy's tensors as graph inputs (batch of one), built once per policy."""
        return {k: np.ascontiguousarray(np.asarray(tensors[k], np.float32)[None]) for k in self.names if k in self.inputs}

    def __call__(self, task_feed: dict[str, np.ndarray], image: np.ndarray, proprio: np.ndarray | None):
        feed = dict(task_feed, image=image)
        if "proprio" in self.inputs:
            feed["proprio"] = proprio if proprio is not None else np.zeros((1, max(self.proprio_dim, 1)), np.float32)
        chunk, grip = self.session.run(None, feed)
        return chunk, grip


if __name__ == "__main__":  # the child: python -m hypervla_core.onnx_backend FOLDER MODEL_ID OUT
    from .runtime import Runtime

    runtime = Runtime.load(sys.argv[1])
    if runtime.model_id != sys.argv[2]:  # the folder changed between the parent's load and ours
        sys.exit(f"checkpoint changed while loading: model {runtime.model_id}, expected {sys.argv[2]}")
    export_onnx(runtime.model, sys.argv[3])
