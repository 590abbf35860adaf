"""The paper suite's latent diffusion path on tiny random diffusers components (CPU, no hub).

A tiny ``UNet2DConditionModel``, ``AutoencoderKL`` and DDIM scheduler are saved in the
diffusers folder layout (safetensors) and loaded back through ``load_latent_diffusion``;
prompts are encoded by a small stand-in text encoder (``transformers`` is not a project
dependency; the ``CLIPTextModel`` path runs only where it is installed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule, model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide
from dicap.backbones.latent_diffusion import LatentDiffusionBundle, load_latent_diffusion, resolve_dtype
from dicap.counterfactual import ddim
from dicap.testing.tiny_models import SCHEDULER_CONFIG, TOKENS, WIDTH, T, save_clip_text_encoder
from latent_stand_ins import CLASSES, TEMPLATE
from latent_stand_ins import pixels as _pixels
from latent_stand_ins import rmse as _rmse

pytestmark = pytest.mark.usefixtures("single_thread")


# --- loading ----------------------------------------------------------------------------------------


def test_load_builds_the_prompt_table_and_the_checkpoints_schedule(bundle, text_encoder):
    from diffusers import DDIMScheduler

    assert bundle.n_classes == 3 and bundle.null_label == 3
    assert bundle.num_train_timesteps == T
    assert bundle.image_size == 16  # UNet sample_size 8 x VAE downsampling 2
    assert bundle.prediction_type == "epsilon"
    assert bundle.dtype == torch.float32 and not bundle.unet.training and not bundle.vae.training
    assert not any(p.requires_grad for p in bundle.unet.parameters())
    # the prompts, then the empty prompt for the null label, encoded in chunks
    assert bundle.prompt_embeddings.shape == (4, TOKENS, WIDTH)
    expected = text_encoder([TEMPLATE.format(c) for c in CLASSES] + [""])
    torch.testing.assert_close(bundle.prompt_embeddings, expected)
    assert max(text_encoder.calls[:2]) == 2  # text_batch_size=2 at load
    # the checkpoint's own (scaled_linear) schedule, not the embedded suite's cosine one
    ref = DDIMScheduler(**{**SCHEDULER_CONFIG, "clip_sample": False}).alphas_cumprod.float()
    torch.testing.assert_close(bundle.alphas_cumprod, ref)
    assert not torch.allclose(bundle.alphas_cumprod, make_schedule(T))


def test_load_refuses_a_folder_without_the_diffusers_layout(tmp_path, text_encoder):
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match="vae"):
        load_latent_diffusion(tmp_path, CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder)
    with pytest.raises(FileNotFoundError):
        load_latent_diffusion(tmp_path / "nowhere", CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder)
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("float64", "cpu")
    assert resolve_dtype(None, "cpu") == torch.float32 and resolve_dtype(None, "cuda") == torch.bfloat16


def test_eps_gathers_each_rows_prompt(bundle):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 8, 8, generator=gen)
    labels = torch.tensor([0, 1, 2, bundle.null_label])
    with torch.no_grad():
        batched = bundle.eps(x, 500, labels)
        one_by_one = torch.cat([bundle.eps(x[i : i + 1], 500, labels[i : i + 1]) for i in range(4)])
        relabelled = bundle.eps(x, 500, torch.tensor([1, 2, 0, 0]))
    assert batched.dtype == torch.float32 and batched.shape == x.shape
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)
    assert (batched - relabelled).flatten(1).abs().amax(1).min() > 1e-5  # the prompt matters for every row


def test_v_and_sample_predictions_are_turned_into_noise(bundle):
    gen = torch.Generator().manual_seed(0)
    x, labels, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([0, 1]), 300
    a = bundle.alpha(t)
    with torch.no_grad():
        raw = bundle.eps(x, t, labels)  # epsilon: the UNet output itself
        for prediction_type, expected in [("v_prediction", math.sqrt(a) * raw + math.sqrt(1 - a) * x),
                               ("sample", (x - math.sqrt(a) * raw) / math.sqrt(1 - a))]:
            other = LatentDiffusionBundle(bundle.unet, bundle.vae, bundle.alphas_cumprod, bundle.prompt_embeddings,
                                          bundle.image_size, prediction_type=prediction_type)
            torch.testing.assert_close(other.eps(x, t, labels), expected, atol=1e-5, rtol=1e-5)


# --- pixels <-> latents -------------------------------------------------------------------------------


def test_to_model_is_the_deterministic_posterior_mean_and_resizes(bundle):
    pixels = _pixels(3)
    z = bundle.to_model(pixels)
    assert z.shape == (3, 4, 8, 8) and z.dtype == torch.float32
    torch.testing.assert_close(bundle.to_model(pixels), z, atol=0, rtol=0)  # the mean, never a sample
    with torch.no_grad():
        mean = bundle.vae.encode(pixels_to_model(pixels)).latent_dist.mean
    torch.testing.assert_close(z, (mean - 0.1) * 2.0)  # shift then scaling factor
    # any input size is brought to the model's resolution first, and back on request
    assert bundle.to_model(_pixels(2, size=12)).shape == (2, 4, 8, 8)
    back = bundle.to_pixels(z)
    assert back.shape == (3, 16, 16, 3) and back.dtype == np.uint8
    assert bundle.to_pixels(z, size=(12, 12)).shape == (3, 12, 12, 3)
    with torch.no_grad():
        torch.testing.assert_close(bundle.decode(z), bundle.vae.decode(z / 2.0 + 0.1).sample)
    assert bundle.to_pixels(z[:0]).shape == (0, 16, 16, 3)


def test_pixel_bundle_has_the_same_conversions():
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval(), make_schedule(T), 3)
    pixels = _pixels(2, size=8)
    x = pixel.to_model(pixels)
    torch.testing.assert_close(x, pixels_to_model(pixels), atol=0, rtol=0)
    np.testing.assert_array_equal(pixel.to_pixels(x, (8, 8)), model_to_pixels(x))
    assert pixel.decode(x) is x
    with pytest.raises(ValueError, match="size"):
        pixel.to_pixels(x, (16, 16))


# --- DDIM round trip in latent space ---------------------------------------------------------------------


def test_latent_round_trip_error_shrinks_with_steps(bundle):
    z0, y = bundle.to_model(_pixels(3)), torch.tensor([0, 1, 2])
    errors = {}
    for steps in (5, 25, 100):
        path = ddim.timestep_path(T, steps, 0.5)
        z_t = ddim.invert(bundle, ClassifierFreeGuide(bundle), z0, y, path)
        assert _rmse(z_t, z0) > 0.1 * float(z0.std())  # genuinely noised
        errors[steps] = _rmse(ddim.reconstruct(bundle, ClassifierFreeGuide(bundle), z_t, y, path), z0)
    # DDIM inversion is first order: the error falls about as fast as the steps grow
    assert errors[100] < errors[25] / 2 < errors[5] / 4, errors
    assert errors[100] < 0.05 * float(z0.std()), errors


# --- reduced precision -------------------------------------------------------------------------------------


def test_bfloat16_runs_the_networks_in_bf16_and_returns_float32(checkpoint, text_encoder, bundle):
    low = load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, dtype="bfloat16", device="cpu", text_encoder=text_encoder)
    assert low.dtype == torch.bfloat16 and low.vae_dtype == torch.bfloat16
    assert low.prompt_embeddings.dtype == torch.bfloat16
    seen = []
    hook = low.unet.register_forward_hook(lambda mod, args, kwargs, out: seen.append((args[0].dtype, kwargs["encoder_hidden_states"].dtype)), with_kwargs=True)
    try:
        z = low.to_model(_pixels(2))
        eps = low.eps(z, 300, torch.tensor([0, low.null_label]))
    finally:
        hook.remove()
    assert z.dtype == torch.float32 and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    # the same numbers as the float32 model, to bf16's precision, and the DDIM maths stay float32
    with torch.no_grad():
        ref = bundle.eps(bundle.to_model(_pixels(2)), 300, torch.tensor([0, low.null_label]))
    assert _rmse(eps, ref) < 0.05 * float(ref.std())
    path = ddim.timestep_path(T, 5, 0.4)
    assert ddim.invert(low, ClassifierFreeGuide(low), z, torch.tensor([0, 1]), path).dtype == torch.float32
    assert low.to_pixels(z).dtype == np.uint8
    # fp16: the UNet goes half, an SD-style VAE (force_upcast) stays in float32
    half = load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, dtype="float16", device="cpu", text_encoder=text_encoder)
    assert half.dtype == torch.float16 and half.vae_dtype == torch.float32


# --- the checkpoint's own text encoder (transformers, where installed) ------------------------------------


def test_clip_text_encoder_from_the_checkpoint(checkpoint, tmp_path):
    import shutil

    root = tmp_path / "ckpt"
    shutil.copytree(checkpoint, root)
    save_clip_text_encoder(root)
    loaded = load_latent_diffusion(root, ["lower", "newer", "wider"], "{} lowest", device="cpu")
    assert loaded.prompt_embeddings.shape == (4, TOKENS, WIDTH)
    assert (loaded.prompt_embeddings[0] - loaded.prompt_embeddings[3]).abs().max() > 1e-4  # a prompt is not the empty one
    with torch.no_grad():
        assert torch.isfinite(loaded.eps(torch.randn(2, 4, 8, 8), 100, torch.tensor([1, loaded.null_label]))).all()


def test_attention_is_pytorchs_fused_sdpa_and_compile_is_cuda_only(checkpoint, text_encoder):
    """diffusers' default processor calls F.scaled_dot_product_attention; compile_unet is a no-op
    on a CPU, and when forced (eager backend: no C++ build) compiles the forward in place, keeping
    the outputs and the forward hooks.  The forced compile runs on a two-layer stand-in for the
    UNet: tracing the UNet itself costs seconds and tests torch, not compile_unet."""
    from types import SimpleNamespace

    from diffusers.models.attention_processor import AttnProcessor2_0

    from dicap.backbones.latent_diffusion import compile_unet

    fresh = load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder)
    assert {type(p) for p in fresh.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert not compile_unet(fresh, torch.device("cpu")) and "forward" not in vars(fresh.unet)
    torch.manual_seed(0)
    stand_in = SimpleNamespace(unet=torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4)))
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    eager = stand_in.unet(x)
    calls = []
    stand_in.unet.register_forward_hook(lambda *_: calls.append(1))
    assert compile_unet(stand_in, torch.device("cpu"), backend="eager", force=True) and "forward" in vars(stand_in.unet)
    torch.testing.assert_close(stand_in.unet(x), eager)
    assert calls == [1]
