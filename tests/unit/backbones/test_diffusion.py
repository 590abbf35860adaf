"""The pixel diffusion backbone (backbones/diffusion.py): the noise schedule."""

from __future__ import annotations

import pytest
import torch

from dicap.backbones.diffusion import make_schedule

pytestmark = pytest.mark.usefixtures("single_thread")

T = 1000


def test_schedule_is_decreasing_in_unit_interval():
    a = make_schedule(T)
    assert a.shape == (T,)
    assert torch.all(a[1:] < a[:-1])
    assert 0 < float(a[-1]) < float(a[0]) < 1
    assert float(a[0]) > 0.999


@pytest.mark.parametrize("class_channels, attention, conditioning", [(0, True, "shift"), (3, False, "scale_shift"),
                                                                    (2, True, "shift"), (0, False, "scale_shift")])
def test_a_saved_unet_loads_back_with_its_class_map(tmp_path, class_channels, attention, conditioning):
    """The class map lives beside diffusers' weights, and the time conditioning in their config:
    a reload must give the very same scores."""
    from dicap.backbones.diffusion import ClassMapUNet, DiffusionBundle, INFO_FILE, UNET_DIR, build_unet, load_diffusion
    from dicap.io import write_json

    torch.manual_seed(0)
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                             "class_channels": class_channels, "attention": attention, "time_conditioning": conditioning}).eval()
    assert isinstance(unet, ClassMapUNet) == bool(class_channels)
    unet.save_pretrained(tmp_path / UNET_DIR, safe_serialization=True)
    write_json(tmp_path / INFO_FILE, {"n_classes": 3, "num_train_timesteps": 50})
    loaded = load_diffusion(tmp_path)
    x, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    expected = DiffusionBundle(unet, make_schedule(50), 3).eps(x, 10, labels)
    assert torch.equal(loaded.eps(x, 10, labels), expected)


@pytest.mark.parametrize("conditioning, factor", [("shift", 1), ("scale_shift", 2), (None, 1)])
def test_scale_shift_conditioning_gives_each_block_a_scale_and_a_shift(conditioning, factor):
    """Adaptive group norm: each ResNet block's projection of the time and class embedding has
    twice the channels (a scale and a shift per channel); the default adds a shift only."""
    from dicap.backbones.diffusion import build_unet

    cfg = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "class_channels": 0, "attention": False}
    unet = build_unet(8, 3, cfg | ({"time_conditioning": conditioning} if conditioning else {}))
    resnets = [m for m in unet.modules() if hasattr(m, "time_emb_proj")]
    assert resnets and all(r.time_emb_proj.out_features == factor * r.conv1.out_channels for r in resnets)


def test_the_class_map_makes_the_class_reach_the_first_convolution():
    """With a class map, two labels give different scores even where the timestep embedding's
    class term is zeroed: the class enters at the input, at every pixel."""
    from dicap.backbones.diffusion import build_unet

    torch.manual_seed(0)
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                             "class_channels": 2, "attention": False}).eval()
    torch.nn.init.zeros_(unet.unet.class_embedding.weight)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    with torch.no_grad():
        out = unet(x[:1].repeat(2, 1, 1, 1), t, class_labels=torch.tensor([0, 1])).sample
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("class_channels, damaged", [(0, "diffusion_pytorch_model.safetensors"), (3, "diffusion_pytorch_model.safetensors"),
                                                     (3, "class_map.safetensors")])
def test_truncated_weights_name_their_file(tmp_path, class_channels, damaged):
    """diffusers' own error names no file: the loader checks each weights file first (CorruptArtifact,
    and the job then removes the model folder)."""
    from dicap.backbones.diffusion import INFO_FILE, UNET_DIR, build_unet, load_diffusion
    from dicap.io import CorruptArtifact, write_json

    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
                             "class_channels": class_channels, "attention": False})
    unet.save_pretrained(tmp_path / UNET_DIR, safe_serialization=True)
    write_json(tmp_path / INFO_FILE, {"n_classes": 3, "num_train_timesteps": 50})
    weights = tmp_path / UNET_DIR / damaged
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptArtifact) as err:
        load_diffusion(tmp_path)
    assert err.value.path == weights
