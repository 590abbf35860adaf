"""The paper suite's latent diffusion path on tiny random diffusers components (CPU, no hub).

A tiny ``UNet2DConditionModel``, ``AutoencoderKL`` and DDIM scheduler are saved in the
diffusers folder layout (safetensors) and loaded back through ``load_latent_diffusion``;
prompts are encoded by a small stand-in text encoder (``transformers`` is not a project
dependency; the ``CLIPTextModel`` path runs only where it is installed).
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest
import torch

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule, model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide, ClipPosterior, ClipPosteriorGuide, make_guide
from dicap.backbones.latent_diffusion import LatentDiffusionBundle, load_latent_diffusion, resolve_dtype
from dicap.counterfactual import ddim, generate
from dicap.testing.tiny_models import SCHEDULER_CONFIG, T, TOKENS, WIDTH, save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = ["circle", "square", "triangle"]
TEMPLATE = "a photo of a {}."
class StandInTextEncoder(torch.nn.Module):
    """Prompts -> (N, TOKENS, WIDTH): hashed words through an embedding and a mixing layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(1000, WIDTH)
        self.pos = torch.nn.Parameter(torch.randn(TOKENS, WIDTH) * 0.1)
        self.calls: list[int] = []

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(len(texts))
        ids = torch.zeros(len(texts), TOKENS, dtype=torch.long)  # 0 = padding
        for i, text in enumerate(texts):
            words = [1 + zlib.crc32(w.encode()) % 999 for w in text.split()][:TOKENS]
            ids[i, : len(words)] = torch.tensor(words, dtype=torch.long)
        return torch.tanh(self.embed(ids) + self.pos)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random latent diffusion checkpoint in the diffusers folder layout."""
    return save_latent_checkpoint(tmp_path_factory.mktemp("latent_ckpt"))


@pytest.fixture(scope="module")
def text_encoder():
    return StandInTextEncoder()


@pytest.fixture(scope="module")
def bundle(checkpoint, text_encoder) -> LatentDiffusionBundle:
    return load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder, text_batch_size=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A tiny random open_clip CLIP, saved and loaded as a local-dir checkpoint."""
    from dicap.backbones.clip import load_clip

    return load_clip({"path": str(save_tiny_clip(tmp_path_factory.mktemp("clip")))})


def _pixels(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish images: a random low-resolution pattern upsampled
    low = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.as_tensor(low).permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy()


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


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
        z_t = ddim.invert(bundle, z0, y, path)
        assert _rmse(z_t, z0) > 0.1 * float(z0.std())  # genuinely noised
        errors[steps] = _rmse(ddim.reconstruct(bundle, z_t, y, path), z0)
    # DDIM inversion is first order: the error falls about as fast as the steps grow
    assert errors[100] < errors[25] / 2 < errors[5] / 4, errors
    assert errors[100] < 0.05 * float(z0.std()), errors


# --- the CLIP guide -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_guide(bundle, clip) -> ClipPosteriorGuide:
    guide = make_guide("clip", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    assert isinstance(guide, ClipPosteriorGuide)
    return guide


def test_clip_guide_steps_up_the_posterior_of_the_target(bundle, clip_guide):
    z0 = bundle.to_model(_pixels(3, seed=1))
    y_cf, t = torch.tensor([2, 0, 1]), 400
    a = bundle.alpha(t)
    z_t = ddim.ddim_move(z0, torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)), 1.0, a)
    with torch.no_grad():  # regenerate may run under no_grad: the guide still gets its gradient
        uncond = bundle.eps(z_t, t, torch.full_like(y_cf, bundle.null_label))
        e0, e1, e2 = (clip_guide.guided_eps(z_t, t, y_cf, s) for s in (0.0, 1.0, 2.0))
    torch.testing.assert_close(e0, uncond)
    assert torch.isfinite(e1).all() and (e1 - e0).abs().max() > 1e-6
    torch.testing.assert_close(e2 - e0, 2 * (e1 - e0), atol=1e-6, rtol=1e-4)

    # guidance shifts x0_hat by +s (1 - a) / a * grad_x0 log p(y_cf | x0): a small step that way raises it
    def log_p(x0_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clip_guide.posterior.log_probs(x0_hat).gather(1, y_cf[:, None]).squeeze(1)

    x0_hat = (z_t - math.sqrt(1 - a) * e0) / math.sqrt(a)
    step = -(e1 - e0)
    step = step / step.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 1e-2
    assert torch.all(log_p(x0_hat + step) > log_p(x0_hat))
    assert torch.all(log_p(x0_hat - step) < log_p(x0_hat))
    # class_probs: the same posterior on the clean latent, a distribution over the classes
    probs = clip_guide.class_probs(z0)
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(probs, clip_guide.posterior.log_probs(z0).exp().detach())


def test_clip_guide_micro_batches_and_unet_backprop(bundle, clip, clip_guide):
    z0 = bundle.to_model(_pixels(3, seed=2))
    y_cf, t = torch.tensor([1, 2, 0]), 600
    z_t = ddim.ddim_move(z0, torch.randn(z0.shape, generator=torch.Generator().manual_seed(1)), 1.0, bundle.alpha(t))
    whole = clip_guide.guided_eps(z_t, t, y_cf, 3.0)
    chunked = ClipPosteriorGuide(bundle, clip_guide.posterior, grad_batch_size=1).guided_eps(z_t, t, y_cf, 3.0)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    full = ClipPosteriorGuide(bundle, clip_guide.posterior, backprop_unet=True).guided_eps(z_t, t, y_cf, 3.0)
    assert torch.isfinite(full).all() and _rmse(full, whole) > 1e-7  # the UNet's Jacobian changes the gradient
    assert not any(p.grad is not None for p in bundle.unet.parameters())


def test_clip_guide_raises_the_targets_posterior_over_a_regeneration(bundle, clip_guide):
    """Whole DDIM regenerations: on average CLIP believes y_cf more with guidance than without."""
    z0, y = bundle.to_model(_pixels(6, seed=3)), torch.tensor([0, 1, 2, 0, 1, 2])
    y_cf = (y + 1) % 3
    path = ddim.timestep_path(T, 6, 0.5)
    z_t = ddim.invert(bundle, z0, y, path)
    p = {s: clip_guide.class_probs(ddim.regenerate(bundle, clip_guide, z_t, y_cf, path, s)).gather(1, y_cf[:, None]).mean()
         for s in (0.0, 5.0)}
    assert p[5.0] > p[0.0] + 0.02, p  # about +0.03 to +0.1 over CLIP and image seeds; a flipped sign lowers it


def test_make_guide_chooses_the_cfg_posterior(bundle, clip):
    with pytest.raises(ValueError, match="clip="):
        make_guide("cfg", bundle)  # a latent model's cfg guide reports CLIP's posterior: it needs CLIP
    assert make_guide("cfg", bundle, cfg_posterior="diffusion").posterior is None
    guide = make_guide("cfg", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    assert isinstance(guide.posterior, ClipPosterior)
    features = clip.encode_texts([TEMPLATE.format(c) for c in CLASSES])
    from_features = make_guide("cfg", bundle, clip=clip, text_features=features.numpy())
    z = bundle.to_model(_pixels(2))
    torch.testing.assert_close(from_features.class_probs(z), guide.class_probs(z))
    with pytest.raises(ValueError, match="clip="):
        make_guide("clip", bundle, clip=clip)
    with pytest.raises(ValueError, match="unknown cfg posterior"):
        make_guide("cfg", bundle, clip=clip, text_features=features, cfg_posterior="oracle")
    # the embedded suite's pixel model keeps its diffusion classifier; the CLIP guide works on pixels too
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval().requires_grad_(False), make_schedule(T), 3)
    assert make_guide("cfg", pixel).posterior is None
    on_pixels = make_guide("clip", pixel, clip=clip, text_features=features)
    x_t, y_cf = pixels_to_model(_pixels(2, size=8)), torch.tensor([1, 2])
    shift = on_pixels.guided_eps(x_t, 300, y_cf, 1.0) - on_pixels.guided_eps(x_t, 300, y_cf, 0.0)
    assert torch.isfinite(shift).all() and shift.abs().max() > 1e-6


# --- generate() end to end ------------------------------------------------------------------------------


class TinyStore:
    """The slice of DatasetStore that generate() uses."""

    dataset = "paper"

    def __init__(self, images: np.ndarray):
        self.images = {"train": images}

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        return self.images["train"][rows["index"].to_numpy()]


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(n), "split": "train", "index": np.arange(n)[::-1].copy(), "label": np.arange(n) % 3})


@pytest.mark.parametrize("guide_name", ["cfg", "clip"])
def test_generate_end_to_end_with_the_latent_model(bundle, clip, guide_name):
    store, rows = TinyStore(_pixels(5, seed=4)), _rows(5)
    targets = (rows["label"].to_numpy() + 1) % 3
    guide = make_guide(guide_name, bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    params = {"steps": 6, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 3.0, "guide": guide_name, "sampling": "random"}
    arrays, table = generate.generate(store, rows, targets, bundle, guide, params)
    assert set(arrays) == {"images"}  # no factors: nothing to audit
    assert arrays["images"].shape == (5, 16, 16, 3) and arrays["images"].dtype == np.uint8
    assert table["y_cf"].tolist() == targets.tolist() and table["y"].tolist() == rows["label"].tolist()
    assert table["guide"].eq(guide_name).all() and table["row"].tolist() == list(range(5))
    assert table["guide_confidence"].between(0, 1).all() and table["guide_prediction"].between(0, 2).all()
    assert np.isfinite(table["reconstruction_mse"]).all()
    assert not np.array_equal(arrays["images"], store.pixels(rows))


def test_generate_keeps_the_pixel_models_bytes():
    """The embedded suite's path: to_model/to_pixels are exactly pixels_to_model/model_to_pixels."""
    torch.manual_seed(0)
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval().requires_grad_(False), make_schedule(T), 3)
    store, rows = TinyStore(_pixels(3, size=8, seed=5)), _rows(3)
    targets = (rows["label"].to_numpy() + 2) % 3
    guide = ClassifierFreeGuide(pixel)
    params = {"steps": 4, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 2.0, "guide": "cfg", "sampling": "random"}
    arrays, table = generate.generate(store, rows, targets, pixel, guide, params)
    path = ddim.timestep_path(T, 4, 0.5)
    x0 = pixels_to_model(store.pixels(rows))
    y, y_cf = torch.tensor(rows["label"].to_numpy()), torch.tensor(targets)
    x_cf = torch.cat([
        ddim.regenerate(pixel, guide, ddim.invert(pixel, x0[i : i + 2], y[i : i + 2], path), y_cf[i : i + 2], path, 2.0)
        for i in (0, 2)
    ])
    np.testing.assert_array_equal(arrays["images"], model_to_pixels(x_cf))
    # the diffusion classifier's probe noise is drawn per batch, as generate() batches
    probs = torch.cat([guide.class_probs(x_cf[i : i + 2]) for i in (0, 2)])
    confidence = probs.gather(1, y_cf[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(table["guide_confidence"], confidence, rtol=1e-5)


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
    assert ddim.invert(low, z, torch.tensor([0, 1]), path).dtype == torch.float32
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


# --- cost switches (issue 16) ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, measured", [(0.0, [False] * 5), (0.5, [True, False, True, False, True]), (1.0, [True] * 5)])
def test_round_trip_fraction_never_changes_the_counterfactuals(bundle, clip, fraction, measured):
    """reconstruction_fraction only decides which rows get the diagnostic: the first
    ceil(f * batch) of each batch (batches of 2 over 5 rows: 2, 2, 1); the images are
    byte-identical, and a measured row's MSE is the one every-row measurement gives."""
    store, rows = TinyStore(_pixels(5, seed=6)), _rows(5)
    targets = (rows["label"].to_numpy() + 1) % 3
    guide = make_guide("cfg", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    params = {"steps": 4, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 3.0, "guide": "cfg", "sampling": "random"}
    full_arrays, full = generate.generate(store, rows, targets, bundle, guide, params)
    arrays, table = generate.generate(store, rows, targets, bundle, guide, {**params, "reconstruction_fraction": fraction})
    np.testing.assert_array_equal(arrays["images"], full_arrays["images"])
    pd.testing.assert_frame_equal(table.drop(columns="reconstruction_mse"), full.drop(columns="reconstruction_mse"))
    mse = table["reconstruction_mse"].to_numpy()
    assert np.isfinite(mse).tolist() == measured and table["reconstruction_mse"].dtype == full["reconstruction_mse"].dtype
    np.testing.assert_allclose(mse[measured], full["reconstruction_mse"].to_numpy()[measured], rtol=1e-5)


def test_reconstructed_rows_is_a_ceiling_share_and_refuses_a_bad_fraction():
    assert [generate.reconstructed_rows(8, f) for f in (0, 0.01, 0.125, 0.13, 1)] == [0, 1, 1, 2, 8]
    assert generate.reconstructed_rows(0, 0.5) == 0
    with pytest.raises(ValueError, match="reconstruction_fraction"):
        generate.reconstructed_rows(4, 1.5)


def test_unmeasured_round_trips_pass_the_guard_but_infinity_does_not():
    from dicap.guards import check_table_finite

    table = pd.DataFrame({"guide_confidence": [0.5, 0.2], "reconstruction_mse": [0.01, np.nan]})
    check_table_finite("t.parquet", table, not_measured=("reconstruction_mse",))
    with pytest.raises(ValueError, match="1 NaN"):
        check_table_finite("t.parquet", table)
    with pytest.raises(ValueError, match="infinite"):
        check_table_finite("t.parquet", table.assign(reconstruction_mse=[np.inf, np.nan]), not_measured=("reconstruction_mse",))
    with pytest.raises(ValueError, match="NaN"):
        check_table_finite("t.parquet", table.assign(guide_confidence=[np.nan, 0.1]), not_measured=("reconstruction_mse",))


def test_attention_is_pytorchs_fused_sdpa_and_compile_is_cuda_only(checkpoint, text_encoder):
    """diffusers' default processor calls F.scaled_dot_product_attention; compile_unet is a no-op
    on a CPU, and when forced (eager backend: no C++ build) keeps the outputs and the forward hooks."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from dicap.backbones.latent_diffusion import compile_unet

    fresh = load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder)
    assert {type(p) for p in fresh.unet.attn_processors.values()} == {AttnProcessor2_0}
    x, y = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])
    eager = fresh.eps(x, 500, y)
    assert not compile_unet(fresh, torch.device("cpu")) and "forward" not in vars(fresh.unet)
    calls = []
    fresh.unet.register_forward_hook(lambda *_: calls.append(1))
    assert compile_unet(fresh, torch.device("cpu"), backend="eager", force=True) and "forward" in vars(fresh.unet)
    torch.testing.assert_close(fresh.eps(x, 500, y), eager)
    assert calls == [1]


def test_backbone_report_averages_the_sampled_round_trips(tmp_path):
    """Rows whose round trip was not sampled (NaN) leave the report's mean to the measured ones."""
    from dicap import layout
    from dicap.io import write_json
    from dicap.report.table import build_backbone_report

    paths = {"clip": tmp_path / layout.CLIP_REPORT.format(dataset="caltech101"),
             "diffusion": tmp_path / layout.DIFFUSION_REPORT.format(dataset="caltech101")}
    write_json(paths["clip"], {"zero_shot_accuracy": 0.5})
    write_json(paths["diffusion"], {"final_loss": None})
    cf = tmp_path / layout.CF_TABLE.format(dataset="caltech101", variant=layout.MAIN, seed=1)
    cf.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"y_cf": [1, 2, 0], "guide_prediction": [1, 0, 0], "guide_confidence": [0.5, 0.5, 0.5],
                  "reconstruction_mse": [0.02, np.nan, 0.04]}).to_parquet(cf)
    out = tmp_path / "backbones.csv"
    build_backbone_report(["caltech101"], [paths["clip"]], [paths["diffusion"]], [cf], out)
    assert pd.read_csv(out)["inversion_reconstruction_mse"].tolist() == [0.03]
