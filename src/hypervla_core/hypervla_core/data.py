"""Demonstrations in HDF5, LIBERO/robomimic layout, streamed with action chunking.

Layout read and written (one file per task or per dataset):
  data/                          attrs: problem_info (LIBERO: JSON with "language_instruction")
  data/demo_<k>/                 attrs: language_instruction, task, seed, num_samples
  data/demo_<k>/obs/<image_key>  (T, H, W, 3) uint8   (ours and LIBERO: agentview_rgb; robomimic: agentview_image)
  data/demo_<k>/obs/<cam>_rgb    one per camera when the file's attrs list `cameras` (bag-to-dataset): the
                                 views are placed side by side in that order, the layout the model reads
  data/demo_<k>/obs/<proprio>    (T, P) float          (keys configurable, concatenated in order)
  data/demo_<k>/actions          (T, 7) float          xyz, rpy, gripper (> 0 = closed, so LIBERO's -1/+1 works)
The index (file, demo, length, instruction) is held in memory; a demo's frames are read from disk on first use
and kept, decompressed, while they fit in the cache budget (`cache_bytes`), so later batches gather from RAM.
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import h5py
import numpy as np

IMAGE_KEYS = ("agentview_rgb", "agentview_image", "image")


@dataclass
class DemoRef:
    path: str
    name: str
    length: int
    instruction: str
    task: str
    phrasings: tuple[str, ...] = ()  # every training phrasing gen-data recorded for the task



def _instruction_of(f: h5py.File, demo: h5py.Group, path: pathlib.Path) -> str:
    for source in (demo.attrs, f["data"].attrs):
        if "language_instruction" in source:
            return str(source["language_instruction"])
    if "problem_info" in f["data"].attrs:  # LIBERO
        return json.loads(f["data"].attrs["problem_info"])["language_instruction"]
    # LIBERO file names spell the instruction: pick_up_the_bowl_demo.hdf5
    return path.stem.removesuffix("_demo").replace("_", " ")


def index_files(paths: list[str | pathlib.Path]) -> list[DemoRef]:
    refs = []
    files = []
    for p in paths:
        p = pathlib.Path(p)
        files.extend(sorted(p.glob("*.hdf5")) if p.is_dir() else [p])
    if not files:
        raise FileNotFoundError(f"no .hdf5 demonstration files in {[str(p) for p in paths]}")
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise ValueError("no 'data' group")
                for name in sorted(f["data"].keys(), key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit() else 0):
                    demo = f["data"][name]
                    length = int(demo["actions"].shape[0])
                    if length == 0:
                        continue
                    task = str(demo.attrs.get("task", path.stem))
                    phrasings = tuple(json.loads(demo.attrs.get("phrasings", "[]")))
                    refs.append(DemoRef(str(path), name, length, _instruction_of(f, demo, path), task, phrasings))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable demonstration file ({exc})") from exc
    return refs


def recorded_camera(refs: list[DemoRef]) -> str | None:
    """The camera spec gen-data recorded in the files ("workspace+front"), None for files from elsewhere."""
    cameras = set()
    for path in sorted({r.path for r in refs}):
        with h5py.File(path, "r") as f:
            if "render" in f.attrs:
                cameras.add(json.loads(f.attrs["render"])["camera"])
    if len(cameras) > 1:
        raise ValueError(f"demonstration files were rendered with different cameras {sorted(cameras)}: "
                         "train on one view setup at a time")
    return cameras.pop() if cameras else None


def recorded_cameras(refs: list[DemoRef]) -> list[str] | None:
    """The separately stored cameras (file attr `cameras`, bag-to-dataset), the same in every file, or None."""
    found = set()
    for path in sorted({r.path for r in refs}):
        with h5py.File(path, "r") as f:
            found.add(tuple(json.loads(f.attrs["cameras"])) if "cameras" in f.attrs else None)
    if len(found) > 1:
        raise ValueError(f"demonstration files list different cameras {sorted(map(str, found))}: "
                         "train on one camera setup at a time")
    names = found.pop()
    return list(names) if names else None


def write_demo(f: h5py.File, images: np.ndarray, proprio: np.ndarray, actions: np.ndarray,
               phrasings: list[str], task: str, seed: int) -> str:
    """One demonstration; `language_instruction` is the task's first phrasing, `phrasings` all of them."""
    data = f.require_group("data")
    name = f"demo_{len(data.keys())}"
    g = data.create_group(name)
    g.create_dataset("obs/agentview_rgb", data=images, dtype=np.uint8, chunks=(1, *images.shape[1:]),
                     compression="lzf")
    g.create_dataset("obs/proprio", data=proprio.astype(np.float32))
    g.create_dataset("actions", data=actions.astype(np.float32))
    g.attrs.update({"language_instruction": phrasings[0], "phrasings": json.dumps(list(phrasings)), "task": task,
                    "seed": seed, "num_samples": len(actions)})
    return name


def write_camera_demo(path, images: dict[str, np.ndarray], joints: np.ndarray, actions: np.ndarray,
                      attrs: dict, rate_hz: float, source: str) -> str:
    """Append one demonstration with one dataset per camera (`images`: name -> (T, H, W, 3), in view order)
    to the HDF5 file at `path`; the file records the cameras, image size, rate and its sources."""
    with h5py.File(path, "a") as f:
        data = f.require_group("data")
        name = f"demo_{len(data.keys())}"
        g = data.create_group(name)
        for cam, stack in images.items():
            g.create_dataset(f"obs/{cam}_rgb", data=stack, chunks=(1, *stack.shape[1:]), compression="lzf")
        g.create_dataset("obs/joint_states", data=np.asarray(joints, np.float32))
        g.create_dataset("actions", data=np.asarray(actions, np.float32))
        g.attrs.update({**attrs, "num_samples": len(actions)})
        first = next(iter(images.values()))
        sources = set(json.loads(f.attrs.get("sources", "[]"))) | {source}
        f.attrs.update({"cameras": json.dumps(list(images)), "image_size": json.dumps(list(first.shape[1:3])),
                        "rate_hz": rate_hz, "sources": json.dumps(sorted(sources))})
    return name


class DemoDataset:
    """Random (frame, chunk) samples across demos. Demos are read whole on first use and kept in RAM up to
    `cache_bytes` (decompressed); the rest are read from disk per batch, so memory stays bounded."""

    def __init__(self, paths, horizon: int, proprio_keys=None, image_key: str | None = None,
                 phrasings: dict[str, list[str]] | None = None, max_open_files: int = 64, cache_bytes: int = 0):
        self.refs = index_files(paths)
        self.camera = recorded_camera(self.refs)
        self.cameras = recorded_cameras(self.refs)
        self.horizon = horizon
        if proprio_keys is None:  # gen-data writes `proprio`; bag-to-dataset the arm's `joint_states`
            with h5py.File(self.refs[0].path, "r") as f:
                obs = f["data"][self.refs[0].name]["obs"]
                proprio_keys = [k for k in ("proprio", "joint_states") if k in obs][:1]
        self.proprio_keys = tuple(proprio_keys)
        self.image_key = image_key
        self.phrasings = phrasings or {}
        self.lengths = np.array([r.length for r in self.refs])
        self.cum = np.concatenate([[0], np.cumsum(self.lengths)])
        # Per task: its demos and their cumulative frame counts, for task-balanced sampling.
        self.tasks = sorted({r.task for r in self.refs})
        self._task_demos = [np.array([i for i, r in enumerate(self.refs) if r.task == t]) for t in self.tasks]
        self._task_cum = [np.concatenate([[0], np.cumsum(self.lengths[d])]) for d in self._task_demos]
        self._files: dict[str, h5py.File] = {}
        self.max_open_files = max_open_files
        self.cache_bytes = cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # demo -> images, proprio, actions
        self._cached_bytes = 0
        self._frame_bytes = self._image(self._demo(self.refs[0]), 0).nbytes if cache_bytes else 0

    def __len__(self) -> int:
        return int(self.cum[-1])

    def instructions(self) -> list[str]:
        out = {r.instruction for r in self.refs}
        for r in self.refs:
            out.update(self.phrasings.get(r.task) or r.phrasings)
        return sorted(out)

    def _file(self, path: str) -> h5py.File:
        if path not in self._files:
            if len(self._files) >= self.max_open_files:
                self._files.pop(next(iter(self._files))).close()
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def _demo(self, ref: DemoRef) -> h5py.Group:
        return self._file(ref.path)["data"][ref.name]

    def proprio_dim(self) -> int:
        demo = self._demo(self.refs[0])
        return sum(int(np.prod(demo["obs"][k].shape[1:])) for k in self.proprio_keys)

    def _image(self, demo: h5py.Group, t) -> np.ndarray:
        """Frame t (an int or a slice) with every camera side by side."""
        if self.cameras:
            return np.concatenate([demo["obs"][f"{c}_rgb"][t] for c in self.cameras], axis=-2)
        return self._image_ds(demo)[t]

    def _cached(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Demo i's (images, proprio, actions) from RAM, read whole on first use while the budget lasts."""
        if i in self._cache or not self.cache_bytes:
            return self._cache.get(i)
        n = self.refs[i].length
        if self._cached_bytes + self._frame_bytes * n > self.cache_bytes:
            return None
        demo = self._demo(self.refs[i])
        proprio = np.concatenate([np.zeros((n, 0), np.float32)] + [
            np.asarray(demo["obs"][k], np.float32).reshape(n, -1) for k in self.proprio_keys], axis=1)
        entry = (self._image(demo, slice(None)), proprio, np.asarray(demo["actions"], np.float32))
        self._cache[i] = entry
        self._cached_bytes += entry[0].nbytes  # the frames: proprio and actions are a few percent more
        return entry

    def _image_ds(self, demo: h5py.Group):
        if self.image_key:
            return demo["obs"][self.image_key]
        for key in IMAGE_KEYS:
            if key in demo["obs"]:
                return demo["obs"][key]
        raise KeyError(f"no camera dataset among {IMAGE_KEYS} in {demo.name}")

    def _proprio(self, demo: h5py.Group, t: int) -> np.ndarray:
        if not self.proprio_keys:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(demo["obs"][k][t], np.float32).reshape(-1) for k in self.proprio_keys])

    def statistics(self, max_demos: int = 10_000) -> dict[str, np.ndarray]:
        """Mean/std of continuous action dims and proprio (std floored: constant dims stay unscaled)."""
        acts, props = [], []
        for ref in self.refs[:max_demos]:
            demo = self._demo(ref)
            acts.append(np.asarray(demo["actions"][:, :6], np.float64))
            if self.proprio_keys:
                props.append(np.concatenate([np.asarray(demo["obs"][k], np.float64).reshape(ref.length, -1)
                                             for k in self.proprio_keys], axis=1))
        a = np.concatenate(acts)
        p = np.concatenate(props) if props else np.zeros((1, 0))

        def floor(std):
            return np.where(std < 1e-6, 1.0, std)

        # A dim whose values are all equal (or nearly) was never taught: the runtime commands 0 on it.
        active = (a.max(0) > a.min(0)) & (a.std(0) >= 1e-6)
        return {"action_mean": a.mean(0), "action_std": floor(a.std(0)),
                "proprio_mean": p.mean(0), "proprio_std": floor(p.std(0)), "active_dims": active}

    def _balanced_frames(self, rng: np.random.Generator, batch_size: int, task: str | None = None) -> np.ndarray:
        """Flat frame indices: a task uniformly (or the given one), then a frame uniformly among its frames."""
        flat = np.empty(batch_size, np.int64)
        tasks = rng.integers(0, len(self.tasks), batch_size) if task is None else [self.tasks.index(task)] * batch_size
        for i, k in enumerate(tasks):
            cum = self._task_cum[k]
            u = rng.integers(0, cum[-1])
            j = np.searchsorted(cum, u, side="right") - 1
            flat[i] = self.cum[self._task_demos[k][j]] + u - cum[j]
        return flat

    def sample(self, rng: np.random.Generator, batch_size: int, balance_tasks: bool = False,
               task: str | None = None) -> dict:
        """A batch of frames, uniform over all frames, or over tasks first (balance_tasks: a task with more or
        longer demonstrations does not crowd the others out of the batch), or from one task only."""
        if balance_tasks or task is not None:
            flat = self._balanced_frames(rng, batch_size, task)
        else:
            flat = rng.integers(0, len(self), batch_size)
        demo_idx = np.searchsorted(self.cum, flat, side="right") - 1
        order = np.argsort(demo_idx, kind="stable")  # read each demo's frames together
        images, firsts, props, chunks, masks, texts = [], [], [], [], [], []
        for i in order:
            ref = self.refs[demo_idx[i]]
            t = int(flat[i] - self.cum[demo_idx[i]])
            end = min(t + self.horizon, ref.length)
            cached = self._cached(int(demo_idx[i]))
            if cached is not None:
                images.append(cached[0][t])
                firsts.append(cached[0][0])
                props.append(cached[1][t])
                act = cached[2][t:end]
            else:
                demo = self._demo(ref)
                images.append(self._image(demo, t))
                firsts.append(self._image(demo, 0))
                props.append(self._proprio(demo, t))
                act = np.asarray(demo["actions"][t:end], np.float32)
            mask = np.zeros(self.horizon, bool)
            mask[: len(act)] = True
            if len(act) < self.horizon:  # past the end: repeat the last action, excluded from the loss
                act = np.concatenate([act, np.repeat(act[-1:], self.horizon - len(act), 0)])
            chunks.append(act)
            masks.append(mask)
            options = self.phrasings.get(ref.task) or ref.phrasings or [ref.instruction]
            texts.append(options[rng.integers(len(options))])
        return {"images": np.stack(images), "first_images": np.stack(firsts), "proprio": np.stack(props),
                "actions": np.stack(chunks), "mask": np.stack(masks), "instructions": texts}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
