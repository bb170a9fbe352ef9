"""Lighter visual meshes for software rendering.

This machine renders with Mesa's software GL, where a frame costs about 0.27 ms per thousand triangles and
little else matters (64 and 128 px cost the same). LIBERO's Panda scene draws 240k visual triangles for
objects a few dozen pixels wide. `lighten` rewrites a MuJoCo XML so that each visual geom (group 1, no
contacts) whose mesh has more triangles than its cap is drawn from a decimated copy instead (made once,
cached on disk). Physics is untouched by construction: the original geom stays in the model, with its mass
and inertia, only moved to a geom group that is not drawn; the drawn copy has no mass and no contacts.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import xml.etree.ElementTree as ET

import numpy as np

VERSION = 10  # bump when the decimation changes: cached files are keyed by it
HIDDEN_GROUP = "3"  # robosuite and MuJoCo draw groups 0-2 at most


def _visual_only(geom: ET.Element) -> bool:
    return geom.get("group") == "1" and geom.get("contype") == "0" and geom.get("conaffinity") == "0"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


class _Mesh:
    """A mesh as MuJoCo reads it (stl/obj/msh), scaled, in its file's frame."""

    def __init__(self, file: str, scale: str | None):
        import mujoco

        scale_attr = f' scale="{scale}"' if scale else ""
        model = mujoco.MjModel.from_xml_string(
            f'<mujoco><asset><mesh name="m" file="{file}"{scale_attr}/></asset>'
            '<worldbody><geom type="mesh" mesh="m"/></worldbody></mujoco>')
        self.faces = model.mesh_face[: model.mesh_facenum[0]].astype(np.int64)
        verts = model.mesh_vert[: model.mesh_vertnum[0]].astype(np.float64)
        corner_normals = model.mesh_normal[model.mesh_facenormal[: len(self.faces)]].reshape(-1, 3)
        normals = np.zeros_like(verts)
        np.add.at(normals, self.faces.reshape(-1), corner_normals)
        # MuJoCo moves a mesh to its centre of mass and principal axes; undo that so the file's frame holds.
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.mesh_quat[0])
        rot = rot.reshape(3, 3)
        self.verts = verts @ rot.T + model.mesh_pos[0]
        self.normals = _unit(normals @ rot.T)
        self.uv = None  # (faces, 3, 2) per corner, when the file has texture coordinates
        if model.mesh_texcoordnum[0]:
            self.uv = model.mesh_texcoord[model.mesh_facetexcoord[: len(self.faces)]].astype(np.float64)


def _decimate(mesh: _Mesh, max_faces: int):
    """(vertices, unit normals, triangles, texture coordinates per corner or None), about max_faces triangles."""
    import fast_simplification
    from scipy.spatial import cKDTree

    # Files split vertices wherever normals change (some are a triangle soup): weld them by position first,
    # or every split is a border the decimation opens into a hole.
    welded, index = np.unique(np.round(mesh.verts, 6), axis=0, return_inverse=True)
    faces = index.reshape(-1)[mesh.faces]
    # Triangles that welding made degenerate (a sphere's poles) throw the quadrics off: shapes drift by cm.
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    verts, faces = fast_simplification.simplify(welded, faces.astype(np.int32), target_count=max_faces)
    verts, faces = np.asarray(verts, np.float64), np.asarray(faces, np.int64)
    # Smooth shading from the original's normals (nearest original vertex); a triangle the decimation turned
    # over is turned back, else it renders as a dark speck.
    normals = mesh.normals[cKDTree(mesh.verts).query(verts)[1]]
    tri = verts[faces]
    facing = np.einsum("ij,ij->i", np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                       normals[faces].sum(axis=1))
    faces[facing < 0] = faces[facing < 0][:, ::-1]
    return verts, normals, faces, None if mesh.uv is None else _transfer_uv(mesh, verts, faces)


def _transfer_uv(mesh: _Mesh, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Texture coordinates for each corner of the new triangles: from the original triangle that faces the
    same way among the nearest to the new one's centre, extended linearly over it, so that all three corners
    stay in one texture chart (per-vertex coordinates would smear across every seam)."""
    from scipy.spatial import cKDTree

    orig = mesh.verts[mesh.faces]  # (F0, 3 corners, 3)
    orig_n = _unit(np.cross(orig[:, 1] - orig[:, 0], orig[:, 2] - orig[:, 0]))
    tri = verts[faces]
    new_n = _unit(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    k = min(8, len(orig))
    _, near = cKDTree(orig.mean(axis=1)).query(tri.mean(axis=1), k=k)
    near = near.reshape(len(tri), k)
    best = near[np.arange(len(tri)), np.argmax(np.einsum("fkj,fj->fk", orig_n[near], new_n), axis=1)]
    p0 = orig[best, 0]
    basis = np.stack([orig[best, 1] - p0, orig[best, 2] - p0], axis=-1)  # (F, 3, 2)
    rel = tri - p0[:, None]  # (F, 3 corners, 3)
    gram = np.einsum("fki,fkj->fij", basis, basis) + 1e-18 * np.eye(2)
    ab = np.einsum("fij,fcj->fci", np.linalg.inv(gram), np.einsum("fki,fck->fci", basis, rel))
    t = mesh.uv[best]  # (F, 3, 2)
    return t[:, None, 0] + ab[..., :1] * (t[:, None, 1] - t[:, None, 0]) + ab[..., 1:] * (t[:, None, 2] - t[:, None, 0])


def _write_obj(path: pathlib.Path, verts, normals, faces, uv) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vn {x:.4f} {y:.4f} {z:.4f}" for x, y, z in normals]
    if uv is None:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces + 1]
    else:
        lines += [f"vt {u:.6f} {1.0 - v:.6f}" for u, v in uv.reshape(-1, 2)]  # MuJoCo flips v reading an OBJ
        corners = np.arange(1, 3 * len(faces) + 1).reshape(-1, 3)
        lines += ["f " + " ".join(f"{v}/{t}/{v}" for v, t in zip(f, c)) for f, c in zip(faces + 1, corners)]
    # Whole or absent: a crash mid-write never leaves a torn mesh in the cache. The temporary file is this
    # writer's own, since evaluation workers fill a fresh cache at the same time (same content, last one wins).
    fd, tmp = tempfile.mkstemp(suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _lightened(file: str, scale: str | None, max_faces: int, cache: pathlib.Path) -> pathlib.Path | None:
    """The decimated copy of a mesh file (made once), or None when the mesh is light enough already."""
    key = hashlib.sha1(pathlib.Path(file).read_bytes())
    key.update(f"{scale}|{max_faces}|{VERSION}".encode())
    out = cache / f"{key.hexdigest()[:20]}.obj"
    small = out.with_suffix(".small")  # remembers "light enough" without reading the mesh again
    if out.exists():
        return out
    if small.exists():
        return None
    cache.mkdir(parents=True, exist_ok=True)
    mesh = _Mesh(file, scale)
    if len(mesh.faces) <= max_faces:
        small.touch()
        return None
    _write_obj(out, *_decimate(mesh, max_faces))
    return out


def lighten(xml: str, max_faces: int, cache: pathlib.Path, max_faces_textured: int | None = None) -> str:
    """`xml` with each visual geom whose mesh has more than `max_faces` triangles (`max_faces_textured` for a
    textured one: thin textured shapes such as a plate tear when cut as far) drawn from a decimated copy."""
    root = ET.fromstring(xml)
    asset = root.find("asset")
    meshes = {m.get("name"): m for m in root.iter("mesh") if m.get("file")}
    textured = {m.get("name") for m in root.iter("material") if m.get("texture")}
    light_names: dict[tuple[str, int], str | None] = {}  # (mesh, cap) -> its decimated copy's name
    for parent in list(root.iter()):
        for geom in parent.findall("geom"):
            name = geom.get("mesh")
            if name not in meshes or not _visual_only(geom):
                continue
            cap = max_faces_textured if geom.get("material") in textured else max_faces
            key = (name, cap)
            if key not in light_names:
                mesh = meshes[name]
                light = None
                if cap and pathlib.Path(mesh.get("file")).is_file():
                    light = _lightened(mesh.get("file"), mesh.get("scale"), cap, cache)
                if light is not None:
                    ET.SubElement(asset, "mesh", name=f"{name}__light{cap}", file=str(light))
                light_names[key] = None if light is None else f"{name}__light{cap}"
            if light_names[key] is None:
                continue
            copy = ET.Element("geom", {k: v for k, v in geom.attrib.items() if k not in ("name", "density")})
            copy.set("mesh", light_names[key])
            if geom.get("name"):
                copy.set("name", f"{geom.get('name')}__light")
            copy.set("mass", "0")
            geom.set("group", HIDDEN_GROUP)
            parent.insert(list(parent).index(geom) + 1, copy)
    return ET.tostring(root, encoding="unicode")
