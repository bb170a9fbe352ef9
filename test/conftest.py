"""Shared fixtures. Every test session gets its own ROS_DOMAIN_ID so concurrent runs never cross-talk."""
import os
import pathlib
import random

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "hypervla.yaml"

# Set before rclpy initializes anywhere in this process or its children.
if "HYPERVLA_TEST_DOMAIN" not in os.environ:
    os.environ["HYPERVLA_TEST_DOMAIN"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["HYPERVLA_TEST_DOMAIN"]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session")
def language():
    from hypervla_core.encoders import LanguageEncoder

    return LanguageEncoder()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, language):
    """Untrained checkpoints of both model types (fast to build; real files on disk), taking the views of the
    tasks file's default camera, as the sim bridge renders them."""
    import torch
    from hypervla_core.config import ModelConfig
    from hypervla_core.model import VLA
    from hypervla_core.sim import camera_views, load_tasks

    from hypervla_core import checkpoint as ckpt

    torch.manual_seed(0)
    out = {}
    for kind in ("hypervla", "monolithic"):
        cfg = ModelConfig(model_type=kind, mono_dim=64, mono_mlp=128, mono_layers=2,
                          views=len(camera_views(None, load_tasks())))
        model = VLA(cfg, language.dim)
        if model.hypernet is not None:  # as after some training: policies differ per instruction
            for head in model.hypernet.heads:
                torch.nn.init.normal_(head.weight, std=0.02)
        folder = tmp_path_factory.mktemp(kind)
        stats = ckpt.Stats.identity(cfg)
        stats.action_std[:] = 0.01
        ckpt.save(folder, cfg, language.dim, model.state_dict(), stats)
        out[kind] = folder
    return out


@pytest.fixture(scope="session")
def libero_checkpoint(tmp_path_factory, language):
    """An untrained checkpoint shaped for the LIBERO Panda: its two cameras by name, 9 joints of proprio."""
    import torch
    from hypervla_core.config import ModelConfig
    from hypervla_core.libero_env import CAMERAS
    from hypervla_core.model import VLA

    from hypervla_core import checkpoint as ckpt

    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, vision_dim=16, hn_dim=32, hn_layers=1, base_dim=16, base_layers=1, keypoints=4,
                      views=2, proprio_dim=9)
    folder = tmp_path_factory.mktemp("libero_ck")
    ckpt.save(folder, cfg, language.dim, VLA(cfg, language.dim).state_dict(), ckpt.Stats.identity(cfg),
              {"cameras": list(CAMERAS)})
    return folder


@pytest.fixture(scope="session")
def ros():
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()
