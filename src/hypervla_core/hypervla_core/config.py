"""Model and training configuration as plain dataclasses (serialized to JSON in checkpoints)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass
class ModelConfig:
    model_type: str = "hypervla"  # "hypervla" (generated base policy) or "monolithic" (the twin)
    # Camera input: every frame is resized to image_size x (views * image_size) RGB: `views` camera views
    # tiled left to right (config/tasks.yaml camera "a+b"), each encoded on its own by the shared encoder.
    image_size: int = 64
    views: int = 1
    # Shared vision encoder: "conv" (small patch encoder trained from scratch) or "hf"
    # (a transformers vision tower - DINOv2, SigLIP, CLIP - loaded from vision_path, a local folder).
    vision_encoder: str = "conv"
    vision_path: str = ""
    vision_dim: int = 64  # conv: width of the patch tokens (hf: read from the model)
    conv_channels: tuple[int, ...] = (32, 64)  # conv stem widths; each layer halves the resolution
    # conv: spatial-softmax keypoints (expected x, y of each of this many learned feature maps, read at the
    # stem's resolution), one extra token per view; 0 = patch tokens only.
    keypoints: int = 0
    # Language encoder: a transformers encoder from a local folder; "" = MiniLM-L6 shipped on PyPI.
    language_path: str = ""
    max_tokens: int = 32
    # How the instruction is read: "none" token by token; "mean" as one sentence vector (the masked mean of its
    # tokens, unit length, as the encoder was trained to be used); "both" the tokens and that vector. The shipped
    # MT10 model (v17) reads "mean": wide paraphrases 5.0 -> 1.5 points lost against "none" (docs/results.md, #31).
    lang_pool: str = "none"
    # Hypernetwork (context encoder + one head per generated tensor).
    hn_dim: int = 128
    hn_layers: int = 2
    hn_heads: int = 4
    hn_mlp: int = 512
    # The hypernetwork also reads the episode's first frame. Without it (the words alone) MT10 obeyed far less: the
    # swapped probe 0.062 -> 0.463 with lang_pool mean, the base policy reading the task off its own view (#31).
    use_first_frame: bool = True
    # Generated base policy (a tiny pre-LN transformer over image tokens + proprio + action token).
    base_dim: int = 32
    base_layers: int = 2
    base_heads: int = 2
    base_mlp: int = 64
    # Monolithic twin: one transformer over instruction + image tokens at every step.
    mono_dim: int = 256
    mono_layers: int = 4
    mono_heads: int = 4
    mono_mlp: int = 1024
    # Actions: chunks of action_horizon 7-D end-effector actions (xyz, rpy, gripper).
    proprio_dim: int = 4
    action_horizon: int = 4
    action_dim: int = 7

    def __post_init__(self):
        # Checked here, not in from_dict, so a config built in code cannot reach the model with another value.
        if self.lang_pool not in ("none", "mean", "both"):
            raise ValueError(f"model config key lang_pool takes none, mean or both, got {self.lang_pool!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = _check_keys(cls, d, "model")
        if "conv_channels" in d:
            d["conv_channels"] = tuple(d["conv_channels"])
        return cls(**d)

    @classmethod
    def reference(cls, **overrides) -> "ModelConfig":
        """The paper's sizes (DESIGN.md section 1): DINOv2-base/T5-base shapes, 128-d HN, 64-d 4-block base."""
        ref = dict(
            image_size=224, vision_dim=768, hn_dim=128, hn_layers=6, hn_heads=4, hn_mlp=512,
            base_dim=64, base_layers=4, base_heads=4, base_mlp=128, max_tokens=32,
            mono_dim=512, mono_layers=8, mono_heads=8, mono_mlp=2048,
        )
        ref.update(overrides)
        return cls(**ref)


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 64
    lr: float = 3e-4
    vision_lr: float = 3e-4  # shared vision encoder (the paper fine-tunes a pretrained one at 3e-5)
    weight_decay: float = 0.05  # only on heads that generate base-policy kernels (and dense kernels)
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    gripper_loss_weight: float = 0.5
    eval_every: int = 0  # steps between closed-loop evaluations in Meta-World (0 = none while training)
    eval_episodes: int = 5  # per task, for those evaluations
    checkpoint_every: int = 1000
    seed: int = 0
    shift_pixels: int = 4  # random shift of each camera view by up to this many pixels (0 = no augmentation)
    balance_tasks: bool = False  # batches draw every task equally often, however many frames each task has
    # Blend each sample's instruction tokens with another sample's by a weight drawn from [0, this]; the
    # action label stays the sample's own, so where the words are ambiguous the first frame must decide.
    instruction_mix: float = 0.0
    # This fraction of samples reads the instruction as one token, its unit sentence vector, instead of its
    # words: the hypernetwork must then use what the vector says, which a paraphrase changes less than a word.
    word_dropout: float = 0.0
    # Training phrasings made by rule (config/tasks.yaml templates), this many more per task; 0 = only `train`.
    template_phrasings: int = 0
    # Fine-tuning: this fraction of every batch comes from the checkpoint's own training demonstrations
    # (task-balanced), so the tasks it already does keep their weights' support while the new ones are added.
    rehearsal: float = 0.0
    threads: int = 2
    # RAM (GB) for demonstrations kept decompressed after their first read; batches from them skip the disk and
    # the decompression (about a fifth of a step with two 64 px cameras). Demos beyond it are read per batch.
    # Per dataset: a fine-tune's new and rehearsed demonstrations each have this budget.
    cache_gb: float = 4.0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**_check_keys(cls, d, "train"))


def _check_keys(cls, d: dict, what: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
    d = dict(d)
    for key, value in d.items():
        # YAML 1.1 reads 1e-4 (no dot) as a string: a float key takes it as the number it says.
        if isinstance(fields[key].default, float) and isinstance(value, str):
            try:
                d[key] = float(value)
            except ValueError:
                raise ValueError(f"{what} config key {key} takes a number, got {value!r}") from None
    return d
