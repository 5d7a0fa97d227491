"""Pose guider (models/pose_guider.py): shapes, zero output at initialisation, trainable from there."""

import pytest
import torch

from fashionflow.models.layers import PseudoConv3d
from fashionflow.models.pose_guider import PoseGuider
from fashionflow.pose import motion_keypoints, pose_tensor


def skeleton_batch(frames=4, height=64, width=48):
    """Two rendered built-in motions as the guider sees them: [b, 3, f, H, W] in [0, 1]."""
    clips = [pose_tensor(motion_keypoints(name, frames), height, width) for name in ("turn", "catwalk")]
    return torch.stack(clips).permute(0, 2, 1, 3, 4)  # b f c h w -> b c f h w


def test_output_is_latent_sized_and_exactly_zero_at_initialisation():
    torch.manual_seed(0)
    guider = PoseGuider(out_channels=16, channels=(4, 8, 8, 16))
    skeletons = skeleton_batch()
    out = guider(skeletons)
    assert out.shape == (2, 16, 4, 8, 6)  # H / 8, W / 8
    assert torch.equal(out, torch.zeros_like(out))


def test_fresh_guider_leaves_the_first_unet_features_unchanged():
    torch.manual_seed(0)
    conv_in = PseudoConv3d(4, 16, kernel_size=7)  # the U-Net's conv_in
    guider = PoseGuider(out_channels=16, channels=(4, 8, 8, 16))
    latents = torch.randn(2, 4, 4, 8, 6)
    features = conv_in(latents)
    assert torch.equal(features + guider(skeleton_batch()), features)


def test_one_training_step_makes_the_output_depend_on_the_pose():
    torch.manual_seed(0)
    guider = PoseGuider(out_channels=8, channels=(4, 8))
    skeletons = skeleton_batch(frames=2, height=32, width=32)
    target = torch.randn(2, 8, 2, 16, 16)
    optimiser = torch.optim.SGD(guider.parameters(), lr=0.1)
    loss = torch.nn.functional.mse_loss(guider(skeletons), target)
    loss.backward()
    assert guider.conv_out.weight.grad.abs().sum() > 0  # the zero layer still receives a gradient
    optimiser.step()
    out = guider(skeletons)
    assert out.abs().sum() > 0 and not torch.allclose(out[0], out[1])  # different poses, different features


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 2, 30, 32), "pose image size 30x32 must be a multiple of 8"),
    ((1, 4, 2, 32, 32), r"pose images must be \[b, 3, f, H, W\]"),
    ((3, 2, 32, 32), r"pose images must be \[b, 3, f, H, W\]"),
])
def test_size_errors_say_what_is_wrong(shape, message):
    with pytest.raises(ValueError, match=message):
        PoseGuider(out_channels=8)(torch.zeros(shape))
