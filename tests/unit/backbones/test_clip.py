"""CLIP's image-encoding path (issue 16): preprocessing on the model's device, bf16 autocast and
bf16 weights, features always float32 and within a stated cosine of fp32.

Two tiny random open_clip models (CPU): the test suite's own (``dicap.testing.tiny_models``, timm's
test_resnet tower, like config.yaml's) and a tiny ViT, the paper suite's kind of image tower.
The old path is the copy kept in ``benchmarks/clip_encoding.py`` for its comparison.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from clip_encoding import old_encode_images

from dicap.backbones.clip import OPENAI_MEAN, OPENAI_STD, ClipBundle, load_clip
from dicap.io import write_json
from dicap.testing.tiny_models import save_tiny_clip

pytestmark = pytest.mark.usefixtures("single_thread")


# Least cosine similarity of bf16 (autocast or weights) features to fp32 ones.  Measured on
# these random tiny models (24 images at twice the model's size; 3 prompts): 0.99997-0.99998
# for images and 0.99997 for texts, both towers, both bf16 modes (torch 2.14.1, CPU).  0.999
# leaves room for other kernels while still failing a wrong cast or a dropped normalisation.
BF16_MIN_COSINE = 0.999
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}


def _vit() -> ClipBundle:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_VIT).eval().requires_grad_(False)
    return ClipBundle(model, open_clip.get_tokenizer("ViT-B-16", context_length=16), 32, OPENAI_MEAN, OPENAI_STD)


@pytest.fixture(scope="module", params=["resnet", "vit"])
def bundle(request, tmp_path_factory) -> ClipBundle:
    if request.param == "vit":
        return _vit()
    return load_clip({"path": str(save_tiny_clip(tmp_path_factory.mktemp("clip")))})


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _with(bundle: ClipBundle, precision: str, model: torch.nn.Module | None = None) -> ClipBundle:
    return ClipBundle(model or bundle.model, bundle.tokenizer, bundle.image_size, bundle.mean, bundle.std, precision)


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


@pytest.mark.parametrize("scale", [1, 2.3])  # the model's own size, and a larger image CLIP resizes (bicubic)
def test_fp32_features_are_bytes_identical_to_the_old_path(bundle, scale):
    images = _images(5, round(bundle.image_size * scale))
    new = bundle.encode_images(images, batch_size=2)
    old = old_encode_images(bundle, images, batch_size=2)
    assert new.dtype == torch.float32 and new.shape == old.shape
    assert torch.equal(new, old)


def test_pixels_to_input_on_the_cpu_is_unchanged_with_or_without_a_device(bundle):
    images = _images(3, bundle.image_size * 2 + 1)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(bundle.pixels_to_input(images), bundle.normalise(x))
    assert torch.equal(bundle.pixels_to_input(images, "cpu"), bundle.normalise(x))


@pytest.mark.parametrize("precision", ["bf16_autocast", "bf16"])
def test_bf16_features_are_float32_and_within_the_cosine_tolerance_of_fp32(bundle, precision):
    images = _images(24, bundle.image_size * 2, seed=1)
    reference = bundle.encode_images(images, batch_size=8)
    model = bundle.model
    if precision == "bf16":
        import copy

        model = copy.deepcopy(bundle.model).to(torch.bfloat16)
    low = _with(bundle, precision, model).encode_images(images, batch_size=8)
    assert low.dtype == torch.float32 and low.shape == reference.shape
    cos = _cosines(low, reference)
    assert cos.min() >= BF16_MIN_COSINE, f"{precision}: min cosine {cos.min():.6f}"
    assert not torch.equal(low, reference)  # bf16 really ran: otherwise this test proves nothing


def test_the_old_path_fails_on_bf16_weights_and_the_new_one_casts_the_input(bundle):
    """The failure issue 16 reports on CUDA ("Input type ... and weight type ... should be the same")."""

    low = copy.deepcopy(bundle.model).to(torch.bfloat16)
    images = _images(2, bundle.image_size)
    with pytest.raises(RuntimeError):
        old_encode_images(_with(bundle, "fp32", low), images)
    assert _with(bundle, "bf16", low).encode_images(images).dtype == torch.float32


def test_text_features_under_bf16_autocast_are_float32_and_close(bundle):
    texts = ["a photo of a circle.", "a photo of a square.", "a photo of a triangle."]
    reference = bundle.encode_texts(texts)
    low = _with(bundle, "bf16_autocast").encode_texts(texts)
    assert low.dtype == torch.float32 and _cosines(low, reference).min() >= BF16_MIN_COSINE


def test_load_clip_takes_the_precision_on_cuda_only_and_casts_bf16_weights(tmp_path, monkeypatch):
    from dicap.backbones import clip as clip_lib

    spec = {"path": str(save_tiny_clip(tmp_path / "clip")), "precision": "bf16_autocast"}
    assert load_clip(spec).precision == "fp32"  # this CPU: as diffusion.pretrained.dtype, CUDA only
    monkeypatch.setattr(clip_lib, "device", lambda: torch.device("cuda"))
    assert load_clip(spec).precision == "bf16_autocast"
    low = load_clip(spec, precision="bf16")
    assert low.precision == "bf16" and next(low.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown CLIP precision"):
        load_clip(spec, precision="fp8")


def test_vit_b16_quickgelu_loads_a_checkpoint_the_test_wrote(tmp_path):
    """The paper suite's CLIP path: a ViT-B-16-quickgelu named in pretrained.json, weights
    from a local file (here ones the test wrote), through create_model_and_transforms."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from dicap.backbones.clip import PRETRAINED_FILE, load_clip

    with torch.device("meta"):  # the architecture's tensors, without the seconds of a random init
        shapes = open_clip.create_model("ViT-B-16-quickgelu", device="meta").state_dict()
    # weights the loader cannot have made itself: each tensor filled with a small value of its own
    reference = {k: torch.full(v.shape, 0.01 * (1 + i % 13), dtype=v.dtype) for i, (k, v) in enumerate(shapes.items())}
    weights = tmp_path / "vit_b16.safetensors"
    save_file(reference, str(weights))
    write_json(tmp_path / "clip" / PRETRAINED_FILE, {"model": "ViT-B-16-quickgelu", "tag": str(weights), "cache_dir": None})

    bundle = load_clip({"path": str(tmp_path / "clip")})
    assert bundle.image_size == 224
    loaded = bundle.model.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    assert type(bundle.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 80, 3), dtype=np.uint8)  # resized to 224 on the way in
    features = bundle.encode_images(image)
    text = bundle.encode_texts(["a photo of a dog."])
    assert features.shape == (1, 512) and text.shape == (1, 512)
    assert torch.allclose(features.norm(dim=1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_truncated_weights_name_their_file(tmp_path, keep):
    """open_clip's own error names no file: the loader checks the weights first (CorruptArtifact,
    and the job then removes the model folder)."""
    from dicap.backbones.clip import WEIGHTS_FILE
    from dicap.io import CorruptArtifact

    weights = save_tiny_clip(tmp_path / "clip") / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * keep)])
    with pytest.raises(CorruptArtifact) as err:
        load_clip({"path": str(tmp_path / "clip")})
    assert err.value.path == weights and "is not a readable safetensors file" in str(err.value)
