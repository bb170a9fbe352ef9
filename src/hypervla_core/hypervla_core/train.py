"""`hypervla train` / `hypervla finetune`: one loop for HyperVLA and its monolithic twin.

AdamW with warm-up + cosine decay, gradient clipping, EMA weights (what gets saved), per-sample generated
weights (batched matmuls), its own learning rate for the shared vision encoder, weight decay only on
heads that generate base-policy kernels (dense kernels for the twin). Runs under torchrun unchanged:
each rank draws its own batches and DistributedDataParallel averages the gradients.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import ModelConfig, TrainConfig
from .data import DemoDataset
from .encoders import LanguageEncoder, join_views, preprocess_images, split_views
from .model import VLA, sentence_vector
from .phrasings import training_phrasings
from .sim import camera_views, load_tasks


def param_groups(model: VLA, cfg: TrainConfig) -> list[dict]:
    decay, no_decay, vision = [], [], []
    for name, p in model.named_parameters():
        if name.startswith("vision."):
            vision.append(p)
        elif model.is_hyper and name.startswith("hypernet.heads.") and name.endswith(".weight"):
            idx = int(name.split(".")[2])
            (decay if list(model.spec)[idx].endswith(".w") else no_decay).append(p)
        elif not model.is_hyper and name.endswith("weight") and p.ndim == 2:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr, "base_lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr, "base_lr": cfg.lr},
        {"params": vision, "weight_decay": 0.0, "lr": cfg.vision_lr, "base_lr": cfg.vision_lr},
    ]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` pixels per sample (replicate padding): cheap, strong augmentation."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(b)])


class Trainer:
    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data_paths: list[str], out_dir: str,
                 init_from: str | None = None, tasks_file=None, phrasings: str = "train",
                 rehearse_paths: list[str] | None = None):
        self.mcfg, self.tcfg = model_cfg, train_cfg
        self.out = pathlib.Path(out_dir)
        self.data_paths = [str(p) for p in data_paths]
        self.tasks_file = str(tasks_file) if tasks_file else None
        self.rehearse_paths = [str(p) for p in rehearse_paths or []] if train_cfg.rehearsal else []
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        torch.manual_seed(train_cfg.seed + self.rank)
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        table = training_phrasings(load_tasks(tasks_file), phrasings, train_cfg.template_phrasings,
                                   train_cfg.seed) if phrasings else None
        cache = int(train_cfg.cache_gb * 2**30)
        self.data = DemoDataset(data_paths, model_cfg.action_horizon, phrasings=table, cache_bytes=cache)
        self.old = None  # the demonstrations rehearsed while fine-tuning
        if train_cfg.rehearsal:
            if not rehearse_paths:
                raise ValueError("rehearsal needs the old tasks' demonstrations (rehearse_paths)")
            self.old = DemoDataset(rehearse_paths, model_cfg.action_horizon, phrasings=table, cache_bytes=cache)
            def setup(d):
                return f"{d.cameras or d.camera}, proprio {d.proprio_dim()}"

            if setup(self.old) != setup(self.data):
                raise ValueError(f"the rehearsed demonstrations ({setup(self.old)}) do not match the new ones "
                                 f"({setup(self.data)})")
        # The files say how many views each frame holds (gen-data: a tiled camera spec; bag-to-dataset: one
        # dataset per camera) and the arm's proprio size; the model must take as many.
        views = len(self.data.cameras) if self.data.cameras else (
            len(camera_views(self.data.camera, {})) if self.data.camera else None)
        if views is not None:
            if init_from is not None and views != model_cfg.views:
                raise ValueError(f"the checkpoint takes {model_cfg.views} camera view(s); this data has {views} "
                                 f"({self.data.cameras or self.data.camera})")
            self.mcfg = model_cfg = dataclasses.replace(model_cfg, views=views)
        proprio_dim = self.data.proprio_dim()
        if proprio_dim != model_cfg.proprio_dim:
            if init_from is not None:
                raise ValueError(f"the checkpoint takes {model_cfg.proprio_dim} proprio values; this data has "
                                 f"{proprio_dim}")
            self.mcfg = model_cfg = dataclasses.replace(model_cfg, proprio_dim=proprio_dim)
        self.language = LanguageEncoder(model_cfg.language_path, model_cfg.max_tokens)
        self.lang_cache = self._encode_all(sorted({*self.data.instructions(),
                                                   *(self.old.instructions() if self.old else ())}))
        self.model = VLA(model_cfg, self.language.dim)
        self.stats = ckpt.Stats(**self.data.statistics()) if init_from is None else None
        if init_from is not None:  # finetune: start from a trained checkpoint, keep its statistics
            loaded = ckpt.load(init_from)
            ckpt.load_state_strict(self.model, loaded.state, f"checkpoint {init_from}")
            self.stats = loaded.stats
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model)
        self.opt = torch.optim.AdamW(param_groups(self.model, train_cfg), betas=(0.9, 0.95))
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.step = 0
        self.rng = np.random.default_rng(train_cfg.seed * 1000 + self.rank)
        self.gen = torch.Generator().manual_seed(train_cfg.seed * 1000 + self.rank)
        self.history: list[dict] = []
        self.resumed_from: list[dict] = []

    def _encode_all(self, texts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for i in range(0, len(texts), 64):
            tok, mask = self.language(texts[i:i + 64])
            for j, t in enumerate(texts[i:i + 64]):
                out[t] = (tok[j], mask[j])
        return out

    def _sample(self, task: str | None = None) -> dict:
        """A batch as arrays: the new demonstrations, and the rehearsed old ones' share when fine-tuning."""
        n_old = round(self.tcfg.batch_size * self.tcfg.rehearsal) if self.old is not None and task is None else 0
        b = self.data.sample(self.rng, self.tcfg.batch_size - n_old, self.tcfg.balance_tasks, task)
        if n_old:
            old = self.old.sample(self.rng, n_old, balance_tasks=True)
            b = {k: np.concatenate([b[k], old[k]]) if isinstance(b[k], np.ndarray) else b[k] + old[k] for k in b}
        return b

    def _batch(self, task: str | None = None) -> dict[str, torch.Tensor]:
        b = self._sample(task)
        s = self.stats
        size, views = self.mcfg.image_size, self.mcfg.views
        images = preprocess_images(torch.from_numpy(b["images"]), size, views)
        firsts = preprocess_images(torch.from_numpy(b["first_images"]), size, views)
        if self.tcfg.shift_pixels:  # each view shifted on its own, so no view's edge slides into its neighbour
            images = join_views(random_shift(split_views(images, views), self.tcfg.shift_pixels, self.gen), views)
        acts = torch.from_numpy(b["actions"])
        cont = (acts[..., :6] - torch.from_numpy(s.action_mean).float()) / torch.from_numpy(s.action_std).float()
        prop = (torch.from_numpy(b["proprio"]) - torch.from_numpy(s.proprio_mean)) / torch.from_numpy(s.proprio_std)
        tokens = torch.stack([self.lang_cache[t][0] for t in b["instructions"]])
        mask = torch.stack([self.lang_cache[t][1] for t in b["instructions"]])
        if self.tcfg.instruction_mix:
            other = torch.randperm(len(tokens), generator=self.gen)
            w = self.tcfg.instruction_mix * torch.rand(len(tokens), 1, 1, generator=self.gen)
            tokens, mask = (1 - w) * tokens + w * tokens[other], mask | mask[other]
        if self.tcfg.word_dropout:
            drop = torch.rand(len(tokens), generator=self.gen) < self.tcfg.word_dropout
            tokens[drop] = torch.cat([sentence_vector(tokens[drop], mask[drop])[0],
                                      tokens.new_zeros(int(drop.sum()), tokens.shape[1] - 1, tokens.shape[2])], 1)
            mask[drop] = torch.arange(mask.shape[1]) == 0
        return {"images": images, "firsts": firsts, "proprio": prop.float(), "cont": cont.float(),
                "grip": (acts[..., 6] > 0).float(), "mask": torch.from_numpy(b["mask"]).float(),
                "tokens": tokens, "lang_mask": mask}

    def loss(self, b) -> tuple[torch.Tensor, dict]:
        chunk, grip = self.ddp(b["tokens"], b["lang_mask"], b["firsts"], b["images"], b["proprio"])
        m = b["mask"]
        mse = (((chunk - b["cont"]) ** 2).mean(-1) * m).sum() / m.sum()
        bce = (F.binary_cross_entropy_with_logits(grip, b["grip"], reduction="none") * m).sum() / m.sum()
        return mse + self.tcfg.gripper_loss_weight * bce, {"mse": mse.item(), "bce": bce.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.tcfg.ema_decay, (1 + self.step) / (10 + self.step))
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def train(self, on_eval=None) -> dict:
        start = time.time()
        bar = tqdm(total=self.tcfg.steps, initial=self.step, desc="train", disable=self.rank != 0)
        self.model.train()
        while self.step < self.tcfg.steps:
            f = lr_factor(self.step, self.tcfg)
            for g in self.opt.param_groups:
                g["lr"] = g["base_lr"] * f
            loss, parts = self.loss(self._batch())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
            self.opt.step()
            self.step += 1
            self._update_ema()
            if self.step % 50 == 0 or self.step == self.tcfg.steps:
                rec = {"step": self.step, "loss": round(loss.item(), 5), **{k: round(v, 5) for k, v in parts.items()},
                       "grad_norm": round(float(gnorm), 3), "elapsed_s": round(time.time() - start, 1)}
                self.history.append(rec)
                bar.set_postfix(loss=f"{loss.item():.4f}", mse=f"{parts['mse']:.4f}")
            bar.update(1)
            if self.rank == 0 and self.tcfg.checkpoint_every and self.step % self.tcfg.checkpoint_every == 0:
                self.save()
            if on_eval and self.tcfg.eval_every and self.step % self.tcfg.eval_every == 0 and self.rank == 0:
                self.save()
                self.history.append({"step": self.step, "eval_mean_success": on_eval(self.out, self.step)})
        bar.close()
        wall = time.time() - start
        model_id = self.save(wall_time_s=wall) if self.rank == 0 else ""
        if self.distributed:
            dist.barrier()
        return {"model_id": model_id, "steps": self.step, "wall_time_s": round(wall, 1), "world_size": self.world}

    # -- checkpoint (EMA weights) + resumable training state, all safetensors/JSON

    def save(self, wall_time_s: float | None = None) -> str:
        extra = {"train_config": self.tcfg.__dict__, "step": self.step, "history": self.history[-200:],
                 "camera": self.data.camera, "cameras": self.data.cameras,
                 # what a later fine-tune rehearses: these and any it rehearsed itself
                 "data": sorted({*self.data_paths, *self.rehearse_paths}),
                 "tasks_file": self.tasks_file,  # the phrasings it learnt, which a fine-tune keeps using
                 "resumed_from": self.resumed_from}  # the saved runs this one continued, so the recipe is complete
        if wall_time_s is not None:
            extra["wall_time_s"] = round(wall_time_s, 1)
        model_id = ckpt.save(self.out, self.mcfg, self.language.dim, self.ema, self.stats, extra)
        state = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        state.update({f"ema.{k}": v for k, v in self.ema.items()})
        for gi, group in enumerate(self.opt.param_groups):
            for pi, p in enumerate(group["params"]):
                for key, value in self.opt.state.get(p, {}).items():
                    state[f"opt.{gi}.{pi}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
        save_file({k: v.contiguous() for k, v in state.items()}, str(self.out / "train_state.safetensors"))
        (self.out / "train_state.json").write_text(json.dumps({"step": self.step, "model_id": model_id}))
        return model_id

    def resume(self) -> bool:
        path = self.out / "train_state.safetensors"
        if not path.exists():
            return False
        loaded = ckpt.load(self.out)
        saved = loaded.cfg
        if saved != self.mcfg:
            diff = {k: (v, getattr(self.mcfg, k)) for k, v in saved.__dict__.items() if getattr(self.mcfg, k) != v}
            raise ValueError(f"cannot resume {self.out}: its model config differs (saved, requested): {diff}")
        state = load_file(str(path))
        self.model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        self.ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
        for gi, group in enumerate(self.opt.param_groups):
            for pi, p in enumerate(group["params"]):
                keys = {k.split(".")[-1]: v for k, v in state.items() if k.startswith(f"opt.{gi}.{pi}.")}
                if keys:
                    keys["step"] = keys["step"].reshape(())
                    self.opt.state[p] = keys
        self.step = json.loads((self.out / "train_state.json").read_text())["step"]
        prior = loaded.meta["extra"]
        self.resumed_from = [*prior.get("resumed_from", []),
                             {"step": self.step, "model_id": loaded.model_id, "steps": prior["train_config"]["steps"]}]
        self.history = list(prior.get("history", []))
        self.rng = np.random.default_rng(self.tcfg.seed * 1000 + self.rank + self.step)
        return True


def fit_report(checkpoint: str, data_paths: list[str], batches: int = 8, batch_size: int = 128, seed: int = 0,
               tasks_file=None) -> dict[str, dict]:
    """How well a checkpoint reproduces demonstrated actions, per task: the training loss's terms (mse of the
    normalized continuous dims, gripper bce) on the recorded frames, without augmentation. A task that fails
    closed-loop and also fits badly here is limited by the model or its data, not by errors compounding
    along the policy's own trajectory."""
    cfg = TrainConfig(batch_size=batch_size, seed=seed, shift_pixels=0, threads=0)
    trainer = Trainer(ckpt.load(checkpoint).cfg, cfg, data_paths, "", init_from=checkpoint, tasks_file=tasks_file)
    trainer.model.eval()
    report = {}
    with torch.no_grad():
        for task in trainer.data.tasks:
            parts = [trainer.loss(trainer._batch(task))[1] for _ in range(batches)]
            report[task] = {k: round(float(np.mean([p[k] for p in parts])), 5) for k in ("mse", "bce")}
    return report
