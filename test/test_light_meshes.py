"""Decimated visual meshes draw fewer triangles and change nothing in the physics."""
import mujoco
import numpy as np

from hypervla_core.light_meshes import HIDDEN_GROUP, lighten


def sphere_obj(path, n=60):
    """A UV sphere of 2*n*(n-1) triangles with texture coordinates, split per face like an exported file."""
    th, ph = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, n))
    pts = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1) * 0.05
    quads = [(i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1) for i in range(n - 1) for j in range(n - 1)]
    tris = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    flat = pts.reshape(-1, 3)
    uv = np.stack([ph / (2 * np.pi), th / np.pi], -1).reshape(-1, 2)
    lines = []
    for k, tri in enumerate(tris):
        lines += [f"v {x} {y} {z}" for x, y, z in flat[list(tri)]]
        lines += [f"vt {u} {v}" for u, v in uv[list(tri)]]
        lines.append("f " + " ".join(f"{3 * k + i}/{3 * k + i}" for i in (1, 2, 3)))
    path.write_text("\n".join(lines) + "\n")


def world_box(model, geom):
    """The (min, max) corners of a mesh geom's vertices in the world, at the initial pose."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    g = model.geom(geom)
    mesh = g.dataid[0]
    start, n = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
    pts = model.mesh_vert[start:start + n] @ data.geom_xmat[g.id].reshape(3, 3).T + data.geom_xpos[g.id]
    return np.concatenate([pts.min(0), pts.max(0)])


def scene(mesh_file, tex_file):
    return f"""<mujoco>
  <asset>
    <texture name="t" type="2d" file="{tex_file}"/>
    <material name="textured" texture="t"/>
    <material name="plain" rgba="0.5 0.5 0.5 1"/>
    <mesh name="ball" file="{mesh_file}" scale="2 2 2"/>
    <mesh name="ball_tex" file="{mesh_file}"/>
    <mesh name="ball_hit" file="{mesh_file}"/>
  </asset>
  <worldbody>
    <body name="obj" pos="0 0 0.2">
      <freejoint/>
      <geom name="vis" type="mesh" mesh="ball" group="1" contype="0" conaffinity="0" density="100" material="plain"/>
      <geom name="vis_tex" type="mesh" mesh="ball_tex" group="1" contype="0" conaffinity="0" material="textured"/>
      <geom name="hit" type="mesh" mesh="ball_hit" group="1"/>
      <geom name="vis_tex2" type="mesh" mesh="ball" group="1" contype="0" conaffinity="0" material="textured"/>
    </body>
    <geom type="plane" size="1 1 0.1"/>
  </worldbody>
</mujoco>"""


def test_decimated_copy_is_drawn_and_physics_is_unchanged(tmp_path):
    sphere_obj(tmp_path / "ball.obj")
    import imageio.v2 as imageio
    imageio.imwrite(tmp_path / "tex.png", np.full((8, 8, 3), 200, np.uint8))
    xml = scene(tmp_path / "ball.obj", tmp_path / "tex.png")
    stock = mujoco.MjModel.from_xml_string(xml)
    light_xml = lighten(xml, 300, tmp_path / "cache")
    light = mujoco.MjModel.from_xml_string(light_xml)

    for field in ("body_mass", "body_inertia", "body_ipos", "body_iquat"):
        np.testing.assert_array_equal(getattr(stock, field), getattr(light, field), err_msg=field)
    def faces(model, name):
        return model.mesh_facenum[model.geom(name).dataid[0]]

    assert light.geom("vis").group == int(HIDDEN_GROUP)  # the original stays, with its mass, undrawn
    copy = light.geom("vis__light")
    assert copy.group == 1 and copy.contype == 0 and copy.conaffinity == 0
    assert faces(light, "vis__light") < 2 * 300 < faces(stock, "vis") / 10  # about max_faces (not exact)
    np.testing.assert_allclose(world_box(light, "vis__light"), world_box(stock, "vis"), atol=0.004)  # same place
    # a geom with contacts and a textured one are left as they were
    for name in ("hit", "vis_tex", "vis_tex2"):
        assert light.geom(name).group == 1 and faces(light, name) == faces(stock, name)

    a, b = mujoco.MjData(stock), mujoco.MjData(light)
    for d in (a, b):
        d.qvel[:3] = [0.3, -0.2, 0.1]
        for _ in range(300):
            mujoco.mj_step(stock if d is a else light, d)
    np.testing.assert_array_equal(a.qpos, b.qpos)

    # a textured mesh is cut only to its own cap, and keeps texture coordinates
    both = mujoco.MjModel.from_xml_string(lighten(xml, 300, tmp_path / "cache", max_faces_textured=1000))
    assert both.geom("vis_tex").group == int(HIDDEN_GROUP)
    assert faces(both, "vis_tex__light") < 2 * 1000 < faces(stock, "vis_tex") / 3
    assert both.mesh_texcoordnum[both.geom("vis_tex__light").dataid[0]] > 0
    # a mesh drawn both plain and textured gets a copy per cap, whichever geom comes first
    assert faces(both, "vis__light") < 2 * 300 < faces(both, "vis_tex2__light") < 2 * 1000
    np.testing.assert_allclose(world_box(both, "vis_tex__light"), world_box(stock, "vis_tex"), atol=0.004)

    # made once: a second call reads the cache and writes the same XML
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert lighten(xml, 300, tmp_path / "cache") == light_xml
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached


def test_libero_physics_is_the_same_with_light_meshes():
    from hypervla_core.libero_env import LiberoArm, LiberoConfig

    runs = []
    for faces in (0, 500):
        arm = LiberoArm(LiberoConfig(cameras=(), mesh_faces_max=faces))
        arm.reset("put_the_bowl_on_the_stove", 3)
        rng = np.random.default_rng(0)
        joints = [arm.step(np.r_[rng.normal(0, 0.01, 3), rng.normal(0, 0.05, 3), [k > 5]])[0].joints
                  for k in range(12)]
        model = arm.env.sim.model._model
        runs.append((np.array(joints), model.body_mass.copy(), model.body_inertia.copy()))
        arm.close()
    for stock, light in zip(*runs):
        np.testing.assert_array_equal(stock, light)


def test_supersampled_frames_are_block_means_and_match_multisampled_ones():
    from hypervla_core.libero_env import CAMERAS, LiberoArm, LiberoConfig, downsample

    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    small = downsample(image, 2)
    assert small.shape == (2, 3, 3)
    np.testing.assert_array_equal(small[1, 2], np.round(image[2:4, 4:6].reshape(4, 3).mean(0) + 1e-9))
    # both arms alive in one process, the first drawn after the second was made (each draws in its own GL context)
    arms = {k: LiberoArm(LiberoConfig(cameras=CAMERAS, image_size=32, supersample=k)) for k in (1, 2)}
    frames = {k: arm.reset("put_the_bowl_on_the_stove", 3).images for k, arm in arms.items()}
    for arm in arms.values():
        arm.close()
    for c in CAMERAS:
        assert frames[2][c].shape == frames[1][c].shape == (32, 32, 3)
        # the same view anti-aliased two ways: a few grey levels apart, where a shifted or flipped frame is tens
        assert np.abs(frames[2][c].astype(float) - frames[1][c]).mean() < 8
        assert np.abs(frames[2][c].astype(float) - frames[1][c][::-1]).mean() > 20


def test_writers_filling_one_cache_at_once_all_succeed(tmp_path):
    """Evaluation workers start together on a fresh cache and write the same decimated mesh: none may fail,
    and what stays is one whole file."""
    import threading

    from hypervla_core.light_meshes import _write_obj

    verts = np.random.default_rng(0).normal(size=(3000, 3))
    normals, faces = verts / np.linalg.norm(verts, axis=1, keepdims=True), np.arange(3000).reshape(-1, 3)
    target, barrier, errors = tmp_path / "mesh.obj", threading.Barrier(8), []

    def write():
        try:
            for _ in range(10):
                barrier.wait()
                _write_obj(target, verts, normals, faces, None)
        except Exception as exc:  # noqa: BLE001 - any failure of a writer is what this test looks for
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(target.read_text().splitlines()) == 3000 * 2 + 1000  # vertices, normals, faces: whole
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.obj"]  # no temporary file left behind
