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


def tasks_file(name: str = "tasks.yaml") -> pathlib.Path:
    """The phrasings live with the rest of the configuration (config/tasks.yaml; LIBERO's config/libero_tasks.yaml):
    HYPERVLA_TASKS (tasks.yaml only), else the source tree's, else beside the params file (HYPERVLA_CONFIG), else
    an installed share/hypervla/config."""
    if name == "tasks.yaml" and os.environ.get("HYPERVLA_TASKS"):
        return pathlib.Path(os.environ["HYPERVLA_TASKS"])
    places = [pathlib.Path(__file__).resolve().parents[3] / "config"]
    if os.environ.get("HYPERVLA_CONFIG"):
        places.append(pathlib.Path(os.environ["HYPERVLA_CONFIG"]).resolve().parent)
    places += [pathlib.Path(prefix) / "share" / "hypervla" / "config"
               for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if prefix]
    for place in places:
        if (place / name).is_file():
            return place / name
    raise FileNotFoundError(f"{name} not found in {', '.join(map(str, places))} (or set HYPERVLA_TASKS)")


def load_tasks(path: str | pathlib.Path | None = None) -> dict:
    """Task suites and phrasings: {"suites": {name: [task]}, "tasks": {task: {"train": [...], "heldout": [...]}}}."""
    return yaml.safe_load(pathlib.Path(path or tasks_file()).read_text())


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
        for p in ph["train"] + ph.get("heldout", []) + ph.get("wide", []):
            if p.lower() == text:
                return task
            a, b = set(p.lower().split()), set(text.split())
            score = len(a & b) / max(len(a | b), 1)
            if score > best_score:
                best, best_score = task, score
    return best if best_score >= 0.5 else None


def to_metaworld(action7: np.ndarray, grip_effort: float = 1.0) -> np.ndarray:
    """7-D end-effector action -> Meta-World's 4-D one; "closed" squeezes with grip_effort (full force is 1)."""
    a = np.asarray(action7, np.float64)
    xyz = np.clip(a[:3] / METRES_PER_UNIT, -1.0, 1.0)
    return np.concatenate([xyz, [grip_effort if a[6] >= 0.5 else -1.0]])


def from_metaworld(action4: np.ndarray) -> np.ndarray:
    a = np.clip(np.asarray(action4, np.float64), -1.0, 1.0)
    return np.concatenate([a[:3] * METRES_PER_UNIT, [0.0, 0.0, 0.0], [1.0 if a[3] > 0 else 0.0]]).astype(np.float32)


def camera_name(name: str | None, table: dict) -> str:
    """None or "" = the tasks file's `camera` (the view the shipped checkpoint was trained on)."""
    return name or table.get("camera", "corner")


def render_settings(task: str, camera: str | None, table: dict) -> dict:
    """Everything that decides what a task's episodes look like (its frames, and the grip that moves the
    objects): episodes made with different settings must not be mixed in one dataset."""
    options = table.get("tasks", {}).get(task, {})
    shown = {k: options[k] for k in ("goal_marker_m", "recolor", "grip_effort") if k in options}
    return {"camera": camera_name(camera, table), **shown}


def camera_views(name: str | None, table: dict) -> list[str]:
    """A camera spec's views: "workspace+front" renders both, tiled left to right in one frame."""
    return camera_name(name, table).split("+")


def resolve_views(name: str | None, table: dict, model) -> list:
    """What mujoco renders from, per view: a free view defined in the tasks file's `cameras`, or one of the
    model's cameras by name."""
    import mujoco

    views = []
    for part in camera_views(name, table):
        view = table.get("cameras", {}).get(part)
        if view is not None:
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.lookat[:] = view["lookat"]
            cam.distance, cam.azimuth, cam.elevation = view["distance"], view["azimuth"], view["elevation"]
            views.append(cam)
        elif mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, part) >= 0:
            views.append(part)
        else:
            known = sorted(table.get("cameras", {})) + [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i)
                                                        for i in range(model.ncam)]
            raise ValueError(f"unknown camera {part!r} (known: {known}; join views with '+')")
    return views


@dataclass
class Observation:
    image: np.ndarray  # (S, V*S, 3) uint8 RGB, upright: V camera views side by side
    proprio: np.ndarray  # hand xyz + gripper opening (4,)
    state: np.ndarray  # Meta-World's full 39-D observation (for the scripted expert only)


class MetaWorldTask:
    """One Meta-World task with randomized object/goal positions per episode and a fast offscreen camera."""

    def __init__(self, task: str, image_size: int = 64, camera: str | None = None, max_steps: int = 200,
                 tasks_file=None):
        import metaworld
        import metaworld.policies
        import mujoco

        key = f"{task}-goal-observable"
        if key not in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
            raise ValueError(f"unknown Meta-World task {task!r}")
        table = load_tasks(tasks_file)
        self.task, self.max_steps = task, max_steps
        self.env = metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=0)
        self.env._freeze_rand_vec = False  # new object/goal positions on every reset...
        self.env.seeded_rand_vec = True  # ...drawn from the env's seeded generator, not numpy's global one
        self._mujoco = mujoco
        # Meta-World's goal sites are 2 cm spheres: a pixel or two at 64x64, too small to locate. A task may ask
        # for a larger rendered marker (config/tasks.yaml goal_marker_m); sites never collide, so physics and
        # the success test are unchanged.
        shown = render_settings(task, camera, table)
        model = self.env.model
        if shown.get("goal_marker_m"):
            site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
            if site < 0:
                raise ValueError(f"{task}: goal_marker_m is set but the model has no 'goal' site")
            model.site_size[site][0] = float(shown["goal_marker_m"])
        # Likewise colour only (config/tasks.yaml recolor: geom -> rgba): the dark, wood-textured puck is hard to
        # tell from the red arm at 64x64. Dropping the material makes the geom's own rgba the rendered colour.
        for name, rgba in shown.get("recolor", {}).items():
            geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if geom < 0:
                raise ValueError(f"{task}: recolor names geom {name!r}, which the model does not have")
            model.geom_matid[geom] = -1
            model.geom_rgba[geom] = rgba
        self.camera, self._views = shown["camera"], resolve_views(shown["camera"], table, model)
        self.grip_effort = float(shown.get("grip_effort", 1.0))
        self.renderer = mujoco.Renderer(self.env.model, image_size, image_size)
        self.expert = metaworld.policies.ENV_POLICY_MAP[task]()
        self.steps = 0
        self._obs = None

    def render(self) -> np.ndarray:
        flags = self._mujoco.mjtRndFlag
        images = []
        for view in self._views:
            self.renderer.update_scene(self.env.data, camera=view)
            # Shadows and reflections cost about 4x in software GL and add nothing the policy needs.
            self.renderer.scene.flags[flags.mjRND_SHADOW] = 0
            self.renderer.scene.flags[flags.mjRND_REFLECTION] = 0
            img = self.renderer.render()
            # Meta-World's corner cameras render upside down; free views (config/tasks.yaml cameras) are upright.
            flip = isinstance(view, str) and view.startswith("corner")
            images.append(img[::-1, ::-1] if flip else img)
        return np.ascontiguousarray(np.concatenate(images, axis=1))

    def _observe(self, state) -> Observation:
        self._obs = Observation(self.render(), np.asarray(state[:4], np.float32), np.asarray(state))
        return self._obs

    def reset(self, seed: int) -> Observation:
        self.env.seed(int(seed))
        state, _ = self.env.reset()
        self.steps = 0
        return self._observe(state)

    def step(self, action7: np.ndarray) -> tuple[Observation, bool, float]:
        state, reward, _, _, info = self.env.step(to_metaworld(action7, self.grip_effort).astype(np.float32))
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
