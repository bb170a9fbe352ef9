"""HyperVLA and its monolithic twin in one file.

HyperVLA: a hypernetwork reads the instruction (and the episode's first frame) once and generates the
weights of a tiny transformer policy; only the shared vision encoder and that policy run per control step.
The monolithic twin conditions one larger transformer on the instruction tokens at every step.

Both expose the same two halves:
  condition(lang_tokens, lang_mask, first_image) -> task tensors     (generator side, once per instruction)
  act(task_tensors, images, proprio) -> (chunk, gripper_logits)      (robot side, every step)
Task tensors carry a leading batch dim: one weight set per sample in training, a batch of one in deployment.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .encoders import build_vision_encoder, split_views

ACTION_SQUASH = 5.0  # continuous outputs are tanh(x / 5) * 5 in normalized units, as in the reference


def squash(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x / ACTION_SQUASH) * ACTION_SQUASH


def sentence_vector(lang_tokens: torch.Tensor, lang_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) tokens -> one unit-length mean token (B, 1, D) and its mask."""
    w = lang_mask.unsqueeze(-1).to(lang_tokens.dtype)
    mean = (lang_tokens * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    return F.normalize(mean, dim=-1), lang_mask.new_ones(lang_mask.shape[0], 1)


def language_input(lang_tokens: torch.Tensor, lang_mask: torch.Tensor, pool: str):
    """What the model reads of the instruction (ModelConfig.lang_pool): its tokens ("none"), their sentence
    vector alone ("mean"), or the tokens with the sentence vector after them ("both")."""
    if pool == "none":
        return lang_tokens, lang_mask
    vec, one = sentence_vector(lang_tokens, lang_mask)
    if pool == "mean":
        return vec, one
    return torch.cat([lang_tokens, vec], 1), torch.cat([lang_mask, one], 1)


# ----------------------------------------------------------------------------------------------------------
# Base policy: its parameter spec and a functional forward that takes (generated) weights as arguments.


def base_policy_spec(cfg: ModelConfig, num_patches: int, vision_dim: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every generated tensor. Dense kernels are stored (in, out)."""
    d, m = cfg.base_dim, cfg.base_mlp
    n_tokens = num_patches + (1 if cfg.proprio_dim else 0) + 1
    spec: dict[str, tuple[int, ...]] = {"in.w": (vision_dim, d), "in.b": (d,), "pos": (n_tokens, d), "act_tok": (d,)}
    if cfg.proprio_dim:
        spec.update({"prop.w": (cfg.proprio_dim, d), "prop.b": (d,)})
    for i in range(cfg.base_layers):
        spec.update({
            f"b{i}.ln1.g": (d,), f"b{i}.ln1.b": (d,),
            f"b{i}.qkv.w": (d, 3 * d), f"b{i}.qkv.b": (3 * d,),
            f"b{i}.proj.w": (d, d), f"b{i}.proj.b": (d,),
            f"b{i}.ln2.g": (d,), f"b{i}.ln2.b": (d,),
            f"b{i}.fc1.w": (d, m), f"b{i}.fc1.b": (m,),
            f"b{i}.fc2.w": (m, d), f"b{i}.fc2.b": (d,),
        })
    spec.update({
        "lnf.g": (d,), "lnf.b": (d,),
        "head.w": (d, cfg.action_horizon * (cfg.action_dim - 1)), "head.b": (cfg.action_horizon * (cfg.action_dim - 1),),
        "grip.w": (d, cfg.action_horizon), "grip.b": (cfg.action_horizon,),
    })
    return spec


def default_init(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The init a base tensor would get if it were an ordinary parameter (Bias-HyperInit copies it)."""
    kind = name.rsplit(".", 1)[-1]
    if kind == "w":  # LeCun normal, as Flax's Dense default
        return torch.randn(shape) / math.sqrt(shape[0])
    if kind == "g":
        return torch.ones(shape)
    if name in ("pos", "act_tok"):
        return torch.randn(shape) * 0.02
    return torch.zeros(shape)


def _ln(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:]) * g.unsqueeze(1) + b.unsqueeze(1)


def _dense(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(b.unsqueeze(1), x, w)  # per-sample weights: (B, N, in) @ (B, in, out) + (B, 1, out)


def base_policy_forward(p: dict[str, torch.Tensor], cfg: ModelConfig, vis: torch.Tensor,
                        proprio: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the base policy with weights p (each (B, *shape)) on patch tokens vis (B, N, Dv)."""
    bsz, d, heads = vis.shape[0], cfg.base_dim, cfg.base_heads
    toks = [_dense(vis, p["in.w"], p["in.b"])]
    if cfg.proprio_dim:
        if proprio is None:
            proprio = vis.new_zeros(bsz, cfg.proprio_dim)
        toks.append(_dense(proprio.unsqueeze(1), p["prop.w"], p["prop.b"]))
    toks.append(p["act_tok"].unsqueeze(1))
    x = torch.cat(toks, dim=1) + p["pos"]
    n = x.shape[1]
    for i in range(cfg.base_layers):
        h = _ln(x, p[f"b{i}.ln1.g"], p[f"b{i}.ln1.b"])
        q, k, v = _dense(h, p[f"b{i}.qkv.w"], p[f"b{i}.qkv.b"]).view(bsz, n, 3, heads, d // heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + _dense(a.transpose(1, 2).reshape(bsz, n, d), p[f"b{i}.proj.w"], p[f"b{i}.proj.b"])
        h = _ln(x, p[f"b{i}.ln2.g"], p[f"b{i}.ln2.b"])
        x = x + _dense(F.gelu(_dense(h, p[f"b{i}.fc1.w"], p[f"b{i}.fc1.b"])), p[f"b{i}.fc2.w"], p[f"b{i}.fc2.b"])
    h = _ln(x[:, -1:], p["lnf.g"], p["lnf.b"])  # the action token
    chunk = squash(_dense(h, p["head.w"], p["head.b"])).view(bsz, cfg.action_horizon, cfg.action_dim - 1)
    grip = _dense(h, p["grip.w"], p["grip.b"]).view(bsz, cfg.action_horizon)
    return chunk, grip


# ----------------------------------------------------------------------------------------------------------
# Hypernetwork: context encoder over [instruction tokens, first-frame embedding, layer token] + one head per tensor.


class HyperNetwork(nn.Module):
    def __init__(self, cfg: ModelConfig, lang_dim: int, vision_dim: int, spec: dict[str, tuple[int, ...]]):
        super().__init__()
        h = cfg.hn_dim
        self.cfg, self.spec = cfg, spec
        self.lang_proj = nn.Linear(lang_dim, h)
        self.lang_pos = nn.Parameter(torch.randn(cfg.max_tokens + (cfg.lang_pool == "both"), h) * 0.02)
        self.img_proj = nn.Linear(vision_dim, h) if cfg.use_first_frame else None
        self.img_pos = nn.Parameter(torch.randn(h) * 0.02) if cfg.use_first_frame else None
        self.layer_token = nn.Parameter(torch.randn(h) * 0.02)
        layer = nn.TransformerEncoderLayer(h, cfg.hn_heads, cfg.hn_mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.hn_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        # Heads are keyed by position: ModuleDict keys may not contain dots.
        self.heads = nn.ModuleList(nn.Linear(h, math.prod(shape)) for shape in spec.values())
        self.reset_heads()

    @torch.no_grad()
    def reset_heads(self):
        """Bias-HyperInit: zero kernels, bias = the default init of the generated tensor."""
        for head, (name, shape) in zip(self.heads, self.spec.items()):
            head.weight.zero_()
            head.bias.copy_(default_init(name, shape).flatten())

    def context(self, lang_tokens: torch.Tensor, lang_mask: torch.Tensor,
                first_feat: torch.Tensor | None) -> torch.Tensor:
        lang_tokens, lang_mask = language_input(lang_tokens, lang_mask, self.cfg.lang_pool)
        bsz, t = lang_mask.shape
        toks = [self.lang_proj(lang_tokens) + self.lang_pos[:t]]
        valid = [lang_mask]
        if self.img_proj is not None:
            toks.append((self.img_proj(first_feat) + self.img_pos).unsqueeze(1))
            valid.append(lang_mask.new_ones(bsz, 1))
        toks.append(self.layer_token.expand(bsz, 1, -1))
        valid.append(lang_mask.new_ones(bsz, 1))
        x, valid = torch.cat(toks, 1), torch.cat(valid, 1)
        n = x.shape[1]
        # Task tokens must not attend to the layer token; the layer token reads everything.
        attn_mask = torch.zeros(n, n, dtype=torch.bool, device=x.device)
        attn_mask[:-1, -1] = True
        x = self.encoder(x, mask=attn_mask, src_key_padding_mask=~valid)
        return self.norm(x[:, -1]) / math.sqrt(self.cfg.hn_dim)  # norm ~1: head kernel variance = output variance

    def forward(self, lang_tokens, lang_mask, first_feat) -> dict[str, torch.Tensor]:
        e = self.context(lang_tokens, lang_mask, first_feat)
        return {name: head(e).view(e.shape[0], *shape) for head, (name, shape) in zip(self.heads, self.spec.items())}


# ----------------------------------------------------------------------------------------------------------
# Monolithic twin: instruction tokens + image tokens + proprio + action token through one transformer.


class MonolithicPolicy(nn.Module):
    def __init__(self, cfg: ModelConfig, lang_dim: int, vision_dim: int, num_patches: int):
        super().__init__()
        d = cfg.mono_dim
        self.cfg = cfg
        self.lang_proj = nn.Linear(lang_dim, d)
        self.vis_proj = nn.Linear(vision_dim, d)
        self.prop_proj = nn.Linear(cfg.proprio_dim, d) if cfg.proprio_dim else None
        n_tokens = cfg.max_tokens + (cfg.lang_pool == "both") + num_patches + (1 if cfg.proprio_dim else 0) + 1
        self.pos = nn.Parameter(torch.randn(n_tokens, d) * 0.02)
        self.act_tok = nn.Parameter(torch.randn(d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.mono_heads, cfg.mono_mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.mono_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.action_horizon * (cfg.action_dim - 1))
        self.grip = nn.Linear(d, cfg.action_horizon)

    def forward(self, lang_tokens, lang_mask, vis, proprio):
        bsz = vis.shape[0]
        lang_tokens, lang_mask = language_input(lang_tokens, lang_mask, self.cfg.lang_pool)
        toks = [self.lang_proj(lang_tokens), self.vis_proj(vis)]
        valid = [lang_mask, lang_mask.new_ones(bsz, vis.shape[1])]
        if self.prop_proj is not None:
            if proprio is None:
                proprio = vis.new_zeros(bsz, self.cfg.proprio_dim)
            toks.append(self.prop_proj(proprio).unsqueeze(1))
            valid.append(lang_mask.new_ones(bsz, 1))
        toks.append(self.act_tok.expand(bsz, 1, -1))
        valid.append(lang_mask.new_ones(bsz, 1))
        x = torch.cat(toks, 1)
        x = x + self.pos[: x.shape[1]]
        pad = ~torch.cat(valid, 1)
        for layer in self.encoder.layers[:-1]:
            x = layer(x, src_key_padding_mask=pad)
        h = self.norm(self._last_layer_at_action_token(x, pad))
        chunk = squash(self.head(h)).view(bsz, self.cfg.action_horizon, self.cfg.action_dim - 1)
        return chunk, self.grip(h)

    def _last_layer_at_action_token(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The last encoder layer (pre-LN, no dropout) at the action token only: the head reads nothing else, so
        the other tokens' queries and MLPs there are skipped (most of that layer's work)."""
        last = self.encoder.layers[-1]
        h = last.norm1(x)
        y = x[:, -1] + last.self_attn(h[:, -1:], h, h, key_padding_mask=pad, need_weights=False)[0][:, 0]
        return y + last.linear2(last.activation(last.linear1(last.norm2(y))))


# ----------------------------------------------------------------------------------------------------------
# The model: shared vision encoder + (hypernetwork -> base policy | monolithic policy).


class VLA(nn.Module):
    """Trainable parts of either model. The frozen language encoder lives outside (see generator.py).

    Parameter prefixes split the checkpoint: `vision.` and `actor.` are the runtime part the robot loads;
    `hypernet.` is generator-only.
    """

    RUNTIME_PREFIXES = ("vision.", "actor.")

    def __init__(self, cfg: ModelConfig, lang_dim: int, runtime_only: bool = False, hf_vision_config=None):
        super().__init__()
        if cfg.model_type not in ("hypervla", "monolithic"):
            raise ValueError(f"unknown model_type {cfg.model_type!r} (expected 'hypervla' or 'monolithic')")
        self.cfg, self.lang_dim = cfg, lang_dim
        self.vision = build_vision_encoder(cfg, hf_vision_config)
        if cfg.views < 1:
            raise ValueError(f"views must be >= 1, got {cfg.views}")
        with torch.no_grad():
            probe = self.encode(torch.zeros(1, 3, cfg.image_size, cfg.views * cfg.image_size))
        self.num_patches, self.vision_dim = probe.shape[1], probe.shape[2]
        self.spec = base_policy_spec(cfg, self.num_patches, self.vision_dim)
        if cfg.model_type == "hypervla":
            self.actor = None  # the actor's weights are generated
            self.hypernet = None if runtime_only else HyperNetwork(cfg, lang_dim, self.vision_dim, self.spec)
        else:
            self.actor = MonolithicPolicy(cfg, lang_dim, self.vision_dim, self.num_patches)
            self.hypernet = None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, V*S) -> patch tokens of every view (B, V*N, D); each view is encoded on its own."""
        vis = self.vision(split_views(images, self.cfg.views))
        return vis.reshape(images.shape[0], -1, vis.shape[-1])

    @property
    def is_hyper(self) -> bool:
        return self.cfg.model_type == "hypervla"

    def task_spec(self) -> dict[str, tuple[int, ...]]:
        """Shapes (without batch dim) of the task tensors `condition` returns."""
        if self.is_hyper:
            return dict(self.spec)
        return {"lang_tokens": (self.cfg.max_tokens, self.lang_dim), "lang_mask": (self.cfg.max_tokens,)}

    def condition(self, lang_tokens: torch.Tensor, lang_mask: torch.Tensor,
                  first_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Once per instruction: the task tensors (generated weights, or the encoded instruction for the twin)."""
        if not self.is_hyper:
            return {"lang_tokens": lang_tokens, "lang_mask": lang_mask.float()}
        if self.hypernet is None:
            raise RuntimeError("this model was loaded runtime-only: it has no hypernetwork")
        first_feat = None
        if self.cfg.use_first_frame:
            if first_images is None:
                first_images = torch.zeros(lang_tokens.shape[0], 3, self.cfg.image_size,
                                           self.cfg.views * self.cfg.image_size)
            # The first frame only conditions the hypernetwork: no gradient through the shared encoder here
            # (the reference uses a frozen copy), which also saves a third of the training compute.
            with torch.no_grad():
                first_feat = self.encode(first_images).mean(1)
        return self.hypernet(lang_tokens, lang_mask, first_feat)

    def act(self, task: dict[str, torch.Tensor], images: torch.Tensor,
            proprio: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step: normalized action chunk (B, H, action_dim - 1) and gripper logits (B, H)."""
        vis = self.encode(images)
        if self.is_hyper:
            return base_policy_forward(task, self.cfg, vis, proprio)
        return self.actor(task["lang_tokens"], task["lang_mask"] > 0.5, vis, proprio)

    def forward(self, lang_tokens, lang_mask, first_images, images, proprio=None):
        return self.act(self.condition(lang_tokens, lang_mask, first_images), images, proprio)

    def parameter_counts(self) -> dict[str, int]:
        def count(m):
            return sum(p.numel() for p in m.parameters()) if m is not None else 0

        vision = count(self.vision)
        generated = sum(math.prod(s) for s in self.spec.values()) if self.is_hyper else 0
        actor = generated if self.is_hyper else count(self.actor)
        return {
            "total_trainable": sum(p.numel() for p in self.parameters()),
            "hypernetwork": count(self.hypernet),
            "shared_vision_encoder": vision,
            "generated_per_task": generated,
            "activated_per_step": vision + actor,
        }
