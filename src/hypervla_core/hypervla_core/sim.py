"""Meta-World (MuJoCo) tasks behind one small interface: used by gen-data, eval and the ROS sim bridge.

Conventions (the suite's 7-D end-effector action): xyz position delta in metres, rpy delta in radians
(Meta-World's Sawyer keeps a fixed orientation, so rpy is ignored here), gripper 0 = open, 1 = closed.
Meta-World's own 4-D action is xyz in [-1, 1] (x 1 cm) and gripper in [-1, 1] (> 0 closes).
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import numpy as np
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

METRES_PER_UNIT = 0.01  # Meta-World's action_scale
# The phrasings live with the rest of the configuration (config/tasks.yaml); HYPERVLA_TASKS overrides.
TASKS_FILE = pathlib.Path(os.environ.get("HYPERVLA_TASKS", pathlib.Path(__file__).resolve().parents[3] / "config" / "tasks.yaml"))


def load_tasks(path: str | pathlib.Path | None = None) -> dict:
    """Task suites and phrasings: {"suites": {name: [task]}, "tasks": {task: {"train": [...], "heldout": [...]}}}."""
    return yaml.safe_load(pathlib.Path(path or TASKS_FILE).read_text())


def suite_tasks(suite: str, path=None) -> list[str]:
    tasks = load_tasks(path)
    if suite in tasks["suites"]:
        return list(tasks["suites"][suite])
    names = [t.strip() for t in suite.split(",") if t.strip()]
    unknown = [t for t in names if t not in tasks["tasks"]]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known suites {sorted(tasks['suites'])}")
    return names


def task_for_instruction(instruction: str, path=None) -> str | None:
    """Exact phrasing match first, then the task whose phrasings share the most words."""
    text = " ".join(instruction.lower().split())
    tasks = load_tasks(path)["tasks"]
    best, best_score = None, 0.0
    for task, ph in tasks.items():
        for p in ph["train"] + ph.get("heldout", []):
            if p.lower() == text:
                return task
            a, b = set(p.lower().split()), set(text.split())
            score = len(a & b) / max(len(a | b), 1)
            if score > best_score:
                best, best_score = task, score
    return best if best_score >= 0.5 else None


def to_metaworld(action7: np.ndarray) -> np.ndarray:
    a = np.asarray(action7, np.float64)
    xyz = np.clip(a[:3] / METRES_PER_UNIT, -1.0, 1.0)
    return np.concatenate([xyz, [1.0 if a[6] >= 0.5 else -1.0]])


def from_metaworld(action4: np.ndarray) -> np.ndarray:
    a = np.clip(np.asarray(action4, np.float64), -1.0, 1.0)
    return np.concatenate([a[:3] * METRES_PER_UNIT, [0.0, 0.0, 0.0], [1.0 if a[3] > 0 else 0.0]]).astype(np.float32)


@dataclass
class Observation:
    image: np.ndarray  # (S, S, 3) uint8 RGB, upright
    proprio: np.ndarray  # hand xyz + gripper opening (4,)
    state: np.ndarray  # Meta-World's full 39-D observation (for the scripted expert only)


class MetaWorldTask:
    """One Meta-World task with randomized object/goal positions per episode and a fast offscreen camera."""

    def __init__(self, task: str, image_size: int = 64, camera: str = "corner", max_steps: int = 200,
                 tasks_file=None):
        import metaworld
        import metaworld.policies
        import mujoco

        key = f"{task}-goal-observable"
        if key not in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            raise ValueError(f"unknown Meta-World task {task!r}")
        self.task, self.max_steps, self.camera = task, max_steps, camera
        self.env = metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=0)
        self.env._freeze_rand_vec = False  # new object/goal positions on every reset...
        self.env.seeded_rand_vec = True  # ...drawn from the env's seeded generator, not numpy's global one
        self._mujoco = mujoco
        # Meta-World's goal sites are 2 cm spheres: a pixel or two at 64x64, too small to locate. A task may ask
        # for a larger rendered marker (config/tasks.yaml goal_marker_m); sites never collide, so physics and
        # the success test are unchanged.
        marker = load_tasks(tasks_file).get("tasks", {}).get(task, {}).get("goal_marker_m")
        if marker:
            site = mujoco.mj_name2id(self.env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            if site < 0:
                raise ValueError(f"{task}: goal_marker_m is set but the model has no 'goal' site")
            self.env.model.site_size[site][0] = float(marker)
        self.renderer = mujoco.Renderer(self.env.model, image_size, image_size)
        self.expert = metaworld.policies.ENV_POLICY_MAP[task]()
        self.steps = 0
        self._obs = None

    def render(self) -> np.ndarray:
        flags = self._mujoco.mjtRndFlag
        self.renderer.update_scene(self.env.data, camera=self.camera)
        # Shadows and reflections cost about 4x in software GL and add nothing the policy needs.
        self.renderer.scene.flags[flags.mjRND_SHADOW] = 0
        self.renderer.scene.flags[flags.mjRND_REFLECTION] = 0
        img = self.renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1]) if self.camera.startswith("corner") else img  # corner renders upside down

    def _observe(self, state) -> Observation:
        self._obs = Observation(self.render(), np.asarray(state[:4], np.float32), np.asarray(state))
        return self._obs

    def reset(self, seed: int) -> Observation:
        self.env.seed(int(seed))
        state, _ = self.env.reset()
        self.steps = 0
        return self._observe(state)

    def step(self, action7: np.ndarray) -> tuple[Observation, bool, float]:
        state, reward, _, _, info = self.env.step(to_metaworld(action7).astype(np.float32))
        self.steps += 1
        return self._observe(state), bool(info.get("success", 0.0) > 0.5), float(reward)

    @property
    def done(self) -> bool:
        return self.steps >= self.max_steps

    def expert_action(self) -> np.ndarray:
        return from_metaworld(self.expert.get_action(self._obs.state))

    def close(self) -> None:
        self.renderer.close()
        self.env.close()
