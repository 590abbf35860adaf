"""The paper suite's pretrained models with random weights, written in their real on-disk layouts.

A forward pass costs the same whatever the weights are: the cost depends on the architecture
and the tensor shapes only.  So ``paper_gpu_hours.py --random-weights`` can measure the
counterfactual stage on any GPU with nothing downloaded (jobs run with ``HF_HUB_OFFLINE=1``):
it builds each architecture from its config, saves it where a real checkpoint would be, and
then loads it through the pipeline's own loaders
(:func:`dicap.backbones.latent_diffusion.load_latent_diffusion`,
:func:`dicap.backbones.clip.load_clip`), so the measured code path is the shard's.

Two sets of shapes:

* ``sd15`` - Stable Diffusion 1.5 (UNet, VAE, DDIM schedule, CLIP ViT-L/14 text encoder with a
  77-token tokenizer) and open_clip's ViT-B-16-quickgelu: the paper suite's models.  The
  configs below are SD 1.5's published ones (``unet/``, ``vae/``, ``text_encoder/`` of
  stable-diffusion-v1-5), written out as data;
* ``tiny`` - the test suite's stand-ins (``dicap.testing.tiny_models``, one definition shared with
  the tests), for a CPU smoke run in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
    "freq_shift": 0, "mid_block_scale_factor": 1,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "norm_num_groups": 32, "act_fn": "silu", "sample_size": 512, "scaling_factor": 0.18215,
}
# SD 1.5 ships a PNDM scheduler config with these betas; the loader reads it as DDIM either way.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
}
TOKENS = 77  # SD's tokenizer pads every prompt to this length: the UNet's cross-attention context
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP ViT-L/14's text tower, as in SD 1.5's text_encoder/config.json; the special token ids
# are those of the tokenizer written below (the same as CLIP's own: the last two of 49408).
SD15_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": TOKENS, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
SD15_CLIP_MODEL = "ViT-B-16-quickgelu"  # config.paper.yaml's clip.pretrained.model


@dataclass(frozen=True)
class RandomModels:
    """Where the stand-ins were written, in the form the benchmark's loaders take."""

    checkpoint: Path  # a diffusers latent diffusion folder: unet/ vae/ scheduler/ text_encoder/ tokenizer/
    clip: dict[str, Any]  # a load_clip spec
    image_size: int  # the UNet's native resolution in pixels


def clip_tokenizer(vocab_size: int, max_length: int) -> "Any":
    """A byte-level ``CLIPTokenizer`` with ``vocab_size`` ids and no merges.

    CLIP's real vocabulary (48 894 merges) is a download; the cost does not depend on it, since
    every prompt is padded to ``max_length`` tokens.  All 256 bytes (and their word-final
    forms) are tokens, so no text maps to the unknown token; unused ids fill the vocabulary up
    to the two special tokens, which sit where CLIP's do (``vocab_size - 2``, ``- 1``).
    """
    import transformers
    from open_clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += [f"<|unused{i}|>" for i in range(vocab_size - 2 - len(tokens))] + [BOS, EOS]
    return transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length)


def write_sd15(root: Path, dtype: torch.dtype) -> RandomModels:
    """Stable Diffusion 1.5 in the diffusers layout, plus the ViT-B/16 CLIP spec.

    UNet and VAE are saved in ``dtype``, the one the loader will cast them to anyway (half
    the bytes of float32 in bf16: the UNet alone is 860 M parameters).  The open_clip model
    needs no file: ``load_clip`` with no pretrained tag builds the architecture from
    open_clip's bundled config with random weights, on the same path a tagged model takes.
    """
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(**SD15_UNET_CONFIG).to(dtype).save_pretrained(root / "unet", safe_serialization=True)
    AutoencoderKL(**SD15_VAE_CONFIG).to(dtype).save_pretrained(root / "vae", safe_serialization=True)
    DDIMScheduler(**SD15_SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    clip_tokenizer(SD15_TEXT_CONFIG["vocab_size"], TOKENS).save_pretrained(root / "tokenizer")
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD15_TEXT_CONFIG))
    text.save_pretrained(root / "text_encoder", safe_serialization=True)
    factor = 2 ** (len(SD15_VAE_CONFIG["block_out_channels"]) - 1)
    return RandomModels(root, {"model": SD15_CLIP_MODEL, "tag": None}, SD15_UNET_CONFIG["sample_size"] * factor)


def write_tiny(root: Path, dtype: torch.dtype) -> RandomModels:
    """The test suite's tiny stand-ins (same architectures, a few thousand parameters each)."""
    from dicap.testing.tiny_models import UNET_CONFIG, VAE_CONFIG, save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip

    del dtype  # tiny weights are float32; the loader casts them
    checkpoint = save_clip_text_encoder(save_latent_checkpoint(root / "diffusion"))
    clip = save_tiny_clip(root / "clip")
    factor = 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1)
    return RandomModels(checkpoint, {"path": str(clip)}, UNET_CONFIG["sample_size"] * factor)


SHAPES: dict[str, Callable[[Path, torch.dtype], RandomModels]] = {"sd15": write_sd15, "tiny": write_tiny}
