"""hypervla_core model: hypernetwork init, per-sample generated weights, the twin, encoders."""
import math

import numpy as np
import pytest
import torch
from hypervla_core.config import ModelConfig
from hypervla_core.model import VLA, base_policy_forward


def _inputs(language, instructions, size=64):
    tokens, mask = language(instructions)
    images = torch.rand(len(instructions), 3, size, size) * 2 - 1
    return tokens, mask, images


def test_bias_hyperinit_gives_same_well_initialized_policy_for_any_instruction(language):
    torch.manual_seed(0)
    model = VLA(ModelConfig(), language.dim)
    tokens, mask, images = _inputs(language, ["open the drawer", "push the puck to the goal"])
    task = model.condition(tokens, mask, images)
    for name, t in task.items():
        assert torch.equal(t[0], t[1]), f"{name} differs between instructions at init"
    # Intended init statistics of what is generated.
    for name, shape in model.spec.items():
        t = task[name][0]
        if name.endswith(".w"):
            assert t.std().item() == pytest.approx(1 / math.sqrt(shape[0]), rel=0.2), name
        elif name.endswith(".g"):
            assert torch.all(t == 1), name
        elif name in ("pos", "act_tok"):
            assert t.std().item() == pytest.approx(0.02, rel=0.35), name
        else:
            assert torch.all(t == 0), name


def test_hn_embedding_has_unit_norm(language):
    model = VLA(ModelConfig(), language.dim)
    tokens, mask, images = _inputs(language, ["close the window"])
    e = model.hypernet.context(tokens, mask, model.vision(images).mean(1))
    assert e.norm().item() == pytest.approx(1.0, rel=0.05)


def test_training_makes_policies_task_dependent(language):
    torch.manual_seed(0)
    model = VLA(ModelConfig(), language.dim)
    tokens, mask, images = _inputs(language, ["open the drawer", "close the drawer"])
    target = torch.tensor([[1.0], [-1.0]]).expand(2, 4 * 6).reshape(2, 4, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(5):
        chunk, _ = model(tokens, mask, images, images)
        loss = torch.nn.functional.mse_loss(chunk, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    task = model.condition(tokens, mask, images)
    assert not torch.allclose(task["head.w"][0], task["head.w"][1])


def test_per_sample_weights_match_single_sample_runs(language):
    torch.manual_seed(0)
    model = VLA(ModelConfig(), language.dim)
    for head in model.hypernet.heads:  # make generated weights instruction dependent
        torch.nn.init.normal_(head.weight, std=0.05)
    tokens, mask, images = _inputs(language, ["reach the goal", "press the button from the top", "open the door"])
    with torch.no_grad():
        task = model.condition(tokens, mask, images)
        vis = model.vision(images)
        batched, grip = base_policy_forward(task, model.cfg, vis, torch.zeros(3, 4))
        for i in range(3):
            one = {k: v[i:i + 1] for k, v in task.items()}
            single, g1 = base_policy_forward(one, model.cfg, vis[i:i + 1], torch.zeros(1, 4))
            torch.testing.assert_close(single[0], batched[i], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(g1[0], grip[i], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_monolithic_twin_same_interface_and_far_more_activated_params(language):
    hyper = VLA(ModelConfig(), language.dim)
    mono = VLA(ModelConfig(model_type="monolithic"), language.dim)
    tokens, mask, images = _inputs(language, ["open the drawer", "reach the goal"])
    chunk, grip = mono(tokens, mask, images, images, torch.zeros(2, 4))
    assert chunk.shape == (2, 4, 6) and grip.shape == (2, 4)
    h, m = hyper.parameter_counts(), mono.parameter_counts()
    # Comparable trainable capacity, very different per-step cost.
    assert 0.5 < m["total_trainable"] / h["total_trainable"] < 2.0
    assert m["activated_per_step"] / h["activated_per_step"] >= 20


@pytest.mark.parametrize("pool", ["none", "mean"])
def test_twin_last_layer_at_the_action_token_equals_the_full_layer(language, pool):
    torch.manual_seed(0)
    mono = VLA(ModelConfig(model_type="monolithic", lang_pool=pool), language.dim).eval()
    # different lengths: padded language tokens must stay masked in the shortcut too
    tokens, mask, images = _inputs(language, ["open the drawer", "push the puck to the goal past the wall"])
    proprio = torch.randn(2, 4)
    fast = mono(tokens, mask, images, images, proprio)
    policy = mono.actor
    last = policy.encoder.layers[-1]
    policy._last_layer_at_action_token = lambda x, pad: last(x, src_key_padding_mask=pad)[:, -1]
    full = mono(tokens, mask, images, images, proprio)
    for a, b in zip(fast, full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fast[0][0], fast[0][1])


def test_actions_are_squashed_to_bounded_normalized_range(language):
    model = VLA(ModelConfig(), language.dim)
    for head in model.hypernet.heads:
        torch.nn.init.normal_(head.weight, std=50.0)  # absurd weights
    tokens, mask, images = _inputs(language, ["push the puck"])
    chunk, _ = model(tokens, mask, images, images)
    assert chunk.abs().max().item() <= 5.0


def test_reference_config_shapes():
    cfg = ModelConfig.reference(vision_encoder="conv", conv_channels=(32, 64, 128))
    model = VLA(cfg, 768)
    counts = model.parameter_counts()
    # DESIGN.md section 1: about 0.2M generated parameters with a 64-d, 4-block base policy.
    assert 150_000 < counts["generated_per_task"] < 300_000
    assert model.hypernet.cfg.hn_layers == 6


@pytest.mark.parametrize("kind", ["dinov2", "siglip", "clip"])
def test_hf_vision_towers_from_tiny_random_configs(language, kind):
    from transformers import CLIPVisionConfig, Dinov2Config, SiglipVisionConfig

    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=8)
    hf_cfg = {"dinov2": Dinov2Config, "siglip": SiglipVisionConfig, "clip": CLIPVisionConfig}[kind](**common)
    cfg = ModelConfig(vision_encoder="hf", image_size=32)
    model = VLA(cfg, language.dim, hf_vision_config=hf_cfg)
    assert model.num_patches == 16 and model.vision_dim == 32
    tokens, mask, images = _inputs(language, ["open the drawer"], size=32)
    chunk, grip = model(tokens, mask, images, images)
    assert torch.isfinite(chunk).all() and chunk.shape == (1, 4, 6)


def test_unknown_model_type_is_rejected():
    with pytest.raises(ValueError, match="model_type"):
        VLA(ModelConfig(model_type="giant"), 384)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"image_size": 64, "bogus": 1})


def test_preprocess_range():
    from hypervla_core.runtime import image_tensor

    img = np.zeros((480, 640, 3), np.uint8)
    img[..., 0] = 255
    x = image_tensor(img, 64)
    assert x.shape == (1, 3, 64, 64)
    assert x[0, 0].min().item() == pytest.approx(1.0) and x[0, 1].max().item() == pytest.approx(-1.0)


@pytest.mark.parametrize("kind", ["hypervla", "monolithic"])
def test_views_side_by_side_are_encoded_one_by_one(language, kind):
    """views: 2 takes two camera views tiled left to right; each is encoded on its own (no token of the left
    view sees the right one), the policy reads the tokens of both, and a frame that does not split is refused."""
    from hypervla_core.encoders import join_views, split_views
    from hypervla_core.runtime import InputError, image_tensor

    torch.manual_seed(0)
    one, two = VLA(ModelConfig(model_type=kind), language.dim), VLA(ModelConfig(model_type=kind, views=2), language.dim)
    assert two.num_patches == 2 * one.num_patches
    x = torch.rand(3, 3, 64, 128) * 2 - 1
    assert torch.equal(join_views(split_views(x, 2), 2), x)
    changed = x.clone()
    changed[..., 64:] = 0.0  # only the right view
    a, b = two.encode(x), two.encode(changed)
    n = one.num_patches
    assert torch.equal(a[:, :n], b[:, :n]) and not torch.allclose(a[:, n:], b[:, n:])
    # the same numbers up to float summation order (batch of 6 views against 3: oneDNN may block them otherwise)
    torch.testing.assert_close(a[:, :n], two.vision(x[..., :64]), rtol=1e-5, atol=1e-5)
    tokens, mask = language(["reach the goal position"] * 3)
    chunk_a, _ = two(tokens, mask, x, x)
    chunk_b, _ = two(tokens, mask, x, changed)
    assert not torch.allclose(chunk_a, chunk_b)  # the second view reaches the action
    assert image_tensor(np.zeros((480, 1280, 3), np.uint8), 64, 2).shape == (1, 3, 64, 128)
    with pytest.raises(InputError, match="2 camera views"):
        image_tensor(np.zeros((64, 127, 3), np.uint8), 64, 2)


def test_spatial_softmax_reads_where_each_map_peaks():
    """Keypoints are the expected positions of peaked maps, finer than the map's grid (between two cells)."""
    from hypervla_core.encoders import spatial_softmax

    maps = torch.full((1, 2, 16, 16), -50.0)
    maps[0, 0, 3, 12] = 50.0  # row 3, column 12
    maps[0, 1, 8, 4:6] = 50.0  # halfway between columns 4 and 5
    points = spatial_softmax(maps)[0]
    grid = torch.linspace(-1, 1, 16)
    assert torch.allclose(points, torch.stack([grid[12], (grid[4] + grid[5]) / 2, grid[3], grid[8]]), atol=1e-5)


def test_keypoint_token_follows_an_object_across_the_image(language):
    """keypoints: K adds one token per view, the encoder's patch tokens are unchanged in count, and the
    keypoint token moves with a bright square moved by two pixels (less than one 8-pixel patch)."""
    torch.manual_seed(0)
    plain, kp = VLA(ModelConfig(), language.dim), VLA(ModelConfig(keypoints=8, views=2), language.dim)
    assert kp.num_patches == 2 * (plain.num_patches + 1)
    a, b = -torch.ones(1, 3, 64, 128), -torch.ones(1, 3, 64, 128)
    a[..., 20:26, 20:26] = 1.0
    b[..., 20:26, 22:28] = 1.0
    ta, tb = kp.encode(a), kp.encode(b)
    n = plain.num_patches
    assert not torch.allclose(ta[:, n], tb[:, n], atol=1e-4)  # the left view's keypoint token
    assert torch.allclose(ta[:, -1], tb[:, -1])  # the right view did not change


@pytest.mark.parametrize("model_type", ["hypervla", "monolithic"])
def test_pooled_language_reads_the_sentence_vector_not_token_order(language, model_type):
    """lang_pool mean: the model sees one unit mean token, so reordering the instruction's tokens (same mean)
    changes nothing; reading the tokens (none, or both: tokens and the mean) sees the order."""
    torch.manual_seed(0)
    tokens, mask, images = _inputs(language, ["push the puck to the goal"])
    n = int(mask.sum())
    shuffled = tokens.clone()
    shuffled[0, :n] = tokens[0, torch.randperm(n)]
    for pool in ("mean", "none", "both"):
        model = VLA(ModelConfig(model_type=model_type, lang_pool=pool), language.dim)
        for p in model.parameters():  # past Bias-HyperInit's zero heads, so the language reaches the output
            p.data.add_(torch.randn_like(p) * 0.05)
        a = model(tokens, mask, images, images)[0]
        b = model(shuffled, mask, images, images)[0]
        assert torch.allclose(a, b, atol=1e-5) == (pool == "mean"), f"lang_pool={pool}"
