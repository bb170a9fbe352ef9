"""LIBERO's Franka Panda (robosuite, operational-space control) as a 7-DoF arm with several cameras.

One scene per suite: in LIBERO-Goal all ten tasks share the same objects, fixtures and initial-state
distribution and differ only in their goal predicates, so one environment serves every task and switching
task swaps the goal (no 20 s reload). Actions are in our units (metres and radians per step, roll-pitch-yaw
in the base frame, gripper 0 open .. 1 closed) and are converted to the OSC controller's normalized input.
Rendering is made cheap once: shadows and reflections off, only the cameras asked for, one renderer reused,
heavy visual meshes drawn decimated (light_meshes; the physics is the same), anti-aliased by supersampling.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np

from .light_meshes import lighten

# robosuite's default OSC_POSE controller maps an input of 1 to these per-step deltas (output_max).
MAX_TRANSLATION = 0.05  # metres per step
MAX_ROTATION = 0.5  # radians per step
JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1", "panda_finger_joint2")
CAMERAS = ("agentview", "robot0_eye_in_hand")
# Init indices below a suite's count (50) are LIBERO's standard initial states, the ones its evaluation uses;
# from SAMPLED_INITS on, a placement drawn by LIBERO's own region samplers, seeded by the index: demonstrations
# start there, so evaluation on the standard states starts from scenes no demonstration saw.
SAMPLED_INITS = 1000


def _cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "hypervla"


def _configure() -> None:
    """LIBERO reads its paths from LIBERO_CONFIG_PATH; point it at a folder we own (no interactive prompt,
    no write under the home directory)."""
    if "LIBERO_CONFIG_PATH" not in os.environ:
        path = _cache_dir() / "libero"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["LIBERO_CONFIG_PATH"] = str(path)


@contextlib.contextmanager
def _light_meshes(max_faces: int, max_faces_textured: int):
    """While robosuite builds the scene, its XML goes through light_meshes.lighten before MuJoCo compiles it."""
    from robosuite.utils.binding_utils import MjSim

    if max_faces <= 0:
        yield
        return
    original = MjSim.__dict__["from_xml_string"]
    build = original.__func__
    MjSim.from_xml_string = classmethod(
        lambda cls, xml: build(cls, lighten(xml, max_faces, _cache_dir() / "meshes", max_faces_textured)))
    try:
        yield
    finally:
        MjSim.from_xml_string = original


def normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", " ".join(text.lower().split()))


@dataclass
class LiberoConfig:
    suite: str = "libero_goal"
    cameras: tuple[str, ...] = CAMERAS
    image_size: int = 128
    control_freq: int = 20
    max_steps: int = 300
    # Visual meshes above this many triangles are drawn decimated (0: LIBERO's own meshes); textured ones
    # above the second figure. Software GL pays per triangle; physics is the same either way (light_meshes).
    mesh_faces_max: int = 500
    textured_mesh_faces_max: int = 5000
    # Anti-aliasing: drawn at this many times image_size without multisampling, then averaged down. Software GL
    # pays for robosuite's 4x multisampling on every fragment; 2x supersampling smooths as well for 60 % of
    # the cost (1 = robosuite's own multisampled frame).
    supersample: int = 2


@dataclass
class ArmObservation:
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8, upright
    joints: np.ndarray  # (9,) 7 arm joints + 2 finger joints, JOINT_NAMES order
    ee_pos: np.ndarray  # (3,) base frame
    ee_quat: np.ndarray  # (4,) x, y, z, w
    objects: dict[str, np.ndarray] = field(default_factory=dict)  # privileged: object name -> (pos 3, quat 4)


def downsample(image: np.ndarray, k: int) -> np.ndarray:
    """(H*k, W*k, 3) uint8 -> (H, W, 3): the rounded mean of each k x k block."""
    if k == 1:
        return np.ascontiguousarray(image)
    h, w = image.shape[0] // k, image.shape[1] // k
    blocks = image.reshape(h, k, w, k, 3).sum((1, 3), dtype=np.uint32)
    return ((blocks + k * k // 2) // (k * k)).astype(np.uint8)


def to_osc(action: np.ndarray) -> np.ndarray:
    """Our 7-D action (m, rad roll-pitch-yaw, gripper 0..1) -> OSC_POSE input in [-1, 1] (gripper -1 open)."""
    from scipy.spatial.transform import Rotation

    a = np.asarray(action, np.float64)
    rotvec = Rotation.from_euler("xyz", a[3:6]).as_rotvec()
    out = np.concatenate([a[:3] / MAX_TRANSLATION, rotvec / MAX_ROTATION, [2.0 * a[6] - 1.0]])
    return np.clip(out, -1.0, 1.0)


class LiberoArm:
    """The simulated arm: `reset(task, init_index)`, `step(action)`, `observe()`, `goals_reached()`."""

    def __init__(self, cfg: LiberoConfig | None = None):
        _configure()
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        import libero.libero.envs.bddl_utils as bddl_utils

        self.cfg = cfg = cfg or LiberoConfig()
        suites = benchmark.get_benchmark_dict()
        if cfg.suite not in suites:
            raise ValueError(f"unknown LIBERO suite {cfg.suite!r}; known: {sorted(suites)}")
        self.suite = suites[cfg.suite]()
        self.tasks = [self.suite.get_task(i) for i in range(self.suite.n_tasks)]
        self.task_names = [t.name for t in self.tasks]
        files = [os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file) for t in self.tasks]
        self.goals = [bddl_utils.robosuite_parse_problem(f)["goal_state"] for f in files]
        # No cameras: physics only (about 10x faster), for finding successful demonstrations before rendering.
        render = bool(cfg.cameras)
        if cfg.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {cfg.supersample}")
        drawn = cfg.image_size * cfg.supersample
        with _light_meshes(cfg.mesh_faces_max, cfg.textured_mesh_faces_max):
            self.env = OffScreenRenderEnv(bddl_file_name=files[0], camera_names=list(cfg.cameras) or ["agentview"],
                                          camera_heights=drawn, camera_widths=drawn,
                                          use_camera_obs=render, has_offscreen_renderer=render,
                                          control_freq=cfg.control_freq, hard_reset=False, ignore_done=True,
                                          horizon=10**9)
            self.env.reset()
        model = self.env.sim.model._model
        model.light_castshadow[:] = 0  # software GL: shadows and reflections double the render time
        model.mat_reflectance[:] = 0
        if render:
            context = self.env.sim._render_context_offscreen
            if cfg.supersample > 1:  # the GL context is made with the model's sample count: make it anew
                model.vis.quality.offsamples = 0
                context.gl_ctx.make_current()
                context.con.free()
                context._set_mujoco_context_and_buffers()
            # robosuite draws into whichever GL context is current: with several arms in one process, each frame
            # must first make its own arm's current.
            draw = context.render

            def render_in_own_context(*args, **kwargs):
                context.gl_ctx.make_current()
                return draw(*args, **kwargs)

            context.render = render_in_own_context
        # robosuite samples observations (cameras too) at whichever physics substep its timers fire, which is
        # not always the period's last one. Observed only on demand instead (forced), an observation is always
        # the state at the end of the period: the same whether it comes from a step or from a loaded state.
        inner = self.env.env
        update = inner._update_observables
        inner._update_observables = lambda force=False: update(force=True) if force else None
        self.task_index = 0
        self.steps = 0
        self.grip = 0.0
        self._hold = None  # (pos, quat) the hand holds at while no command comes
        self._obs = None

    @property
    def task(self) -> str:
        return self.task_names[self.task_index]

    @property
    def instruction(self) -> str:
        return self.tasks[self.task_index].language

    def task_index_of(self, name_or_instruction: str) -> int | None:
        key = normalize(name_or_instruction.replace("_", " "))
        for i, t in enumerate(self.tasks):
            if key in (normalize(t.name.replace("_", " ")), normalize(t.language)):
                return i
        return None

    def init_states(self, task_index: int | None = None) -> np.ndarray:
        return self.suite.get_task_init_states(self.task_index if task_index is None else task_index)

    def set_task(self, task: int | str) -> int:
        """The task whose goal counts as success (same scene, another goal). Returns its index."""
        index = task if isinstance(task, int) else self.task_index_of(task)
        if index is None or not 0 <= index < len(self.tasks):
            raise ValueError(f"no task {task!r} in {self.cfg.suite}")
        self.task_index = index
        self.env.env.parsed_problem["goal_state"] = self.goals[index]
        return index

    def reset(self, task: int | str, init_index: int = 0) -> ArmObservation:
        states = self.init_states(self.set_task(task))
        sampled = init_index >= SAMPLED_INITS
        if not (sampled or 0 <= init_index < len(states)):
            raise ValueError(f"init state {init_index} out of range: {self.cfg.suite} has {len(states)} "
                             f"(0-{len(states) - 1}), or a sampled placement from {SAMPLED_INITS} on")
        # LIBERO re-samples the fixtures' places (cabinet, stove, rack: 1-2 cm) and the objects' with numpy's
        # global generator at every reset, and init states hold only joint states: seeded by the init index, an
        # init index is one scene (the same for every task of the suite), and the caller's random stream is
        # left as it was.
        saved = np.random.get_state()
        np.random.seed(init_index)
        try:
            self.env.reset()
        finally:
            np.random.set_state(saved)
        # The solver's warm start survives a soft reset; left in, an episode depends on the one before it.
        self.env.sim.data._data.qacc_warmstart[:] = 0
        for robot in self.env.env.robots:  # the gripper integrates its commands: start every episode from rest
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        if not sampled:
            self.env.set_init_state(states[init_index])
        # Objects settle with zero actions (LIBERO's evaluation does 5; a sampled placement drops its objects
        # from a few cm and is still within 1 um after 10).
        for _ in range(10 if sampled else 5):
            self.env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        self._obs = self._observe_now()
        self.steps, self.grip, self._hold = 0, 0.0, None
        return self.observe()

    def _observe_now(self) -> dict:
        # After a physics step MuJoCo's body poses still belong to the substep before; forward() brings them to
        # the state itself, so a frame drawn now equals one drawn from the same state loaded later.
        self.env.sim.forward()
        return self.env.env._get_observations(force_update=True)

    def step(self, action: np.ndarray) -> tuple[ArmObservation, bool]:
        """One control period with `action` (our units). Returns (observation, this task's goal reached)."""
        action = np.asarray(action, np.float64)
        if action.shape != (7,) or not np.isfinite(action).all():
            raise ValueError(f"expected 7 finite action values, got {action.shape}")
        self.grip = float(action[6])
        self._hold = None
        self.env.step(to_osc(action))
        self._obs = self._observe_now()
        self.steps += 1
        return self.observe(), self.success()

    def hold(self) -> ArmObservation:
        """One control period without a command, as a servo does on timeout: the hand is driven back to where
        it was when holding began (a zero delta only damps, and the arm drifts on), the grip is kept."""
        from scipy.spatial.transform import Rotation

        o = self._obs
        if self._hold is None:
            self._hold = (o["robot0_eef_pos"].copy(), o["robot0_eef_quat"].copy())
        pos, quat = self._hold
        turn = (Rotation.from_quat(quat) * Rotation.from_quat(o["robot0_eef_quat"]).inv()).as_euler("xyz")
        self.env.step(to_osc(np.concatenate([pos - o["robot0_eef_pos"], turn, [self.grip]])))
        self._obs = self._observe_now()
        return self.observe()

    @property
    def done(self) -> bool:
        return self.steps >= self.cfg.max_steps

    def success(self) -> bool:
        return self.goal_reached(self.task_index)

    def goal_reached(self, task_index: int) -> bool:
        inner = self.env.env
        return all(inner._eval_predicate(s) for s in self.goals[task_index])

    def goals_reached(self) -> list[str]:
        """Every task of the suite whose goal holds now (LIBERO's own predicates): the wrong-goal check."""
        return [self.task_names[i] for i in range(len(self.tasks)) if self.goal_reached(i)]

    def observe(self) -> ArmObservation:
        o = self._obs
        k = self.cfg.supersample
        images = {c: downsample(o[f"{c}_image"][::-1], k) for c in self.cfg.cameras}  # GL renders bottom-up
        joints = np.concatenate([o["robot0_joint_pos"], o["robot0_gripper_qpos"]]).astype(np.float32)
        objects = {}
        for name in self.env.env.objects_dict:
            if f"{name}_pos" in o:
                objects[name] = np.concatenate([o[f"{name}_pos"], o[f"{name}_quat"]]).astype(np.float32)
        return ArmObservation(images, joints, o["robot0_eef_pos"].astype(np.float32),
                              o["robot0_eef_quat"].astype(np.float32), objects)

    def sim_state(self) -> np.ndarray:
        return self.env.get_sim_state()

    def fixture_poses(self) -> dict[str, list[float]]:
        """Where the fixtures stand (pos + quat per root body): part of the scene, not of the joint state."""
        model, env = self.env.sim.model, self.env.env
        out = {}
        for fixture in env.fixtures_dict.values():
            i = model.body_name2id(fixture.root_body)
            out[fixture.root_body] = [*map(float, model.body_pos[i]), *map(float, model.body_quat[i])]
        return out

    def load_state(self, state: np.ndarray, task: int | str | None = None,
                   fixtures: dict[str, list[float]] | None = None) -> ArmObservation:
        """Put the scene in another arm's state (sim_state, and fixture_poses: LIBERO moves its fixtures at
        every reset, and the joint state does not say where they are): a shadow copy for the experts."""
        if fixtures:
            model = self.env.sim.model
            for body, pose in fixtures.items():
                i = model.body_name2id(body)
                model.body_pos[i], model.body_quat[i] = pose[:3], pose[3:]
        if task is not None:
            self.set_task(task)
        self._obs = self.env.regenerate_obs_from_state(np.asarray(state, np.float64))
        return self.observe()

    def close(self) -> None:
        self.env.close()
