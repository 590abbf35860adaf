"""Tiny random stand-ins for the paper suite's pretrained models, written in their real
on-disk layouts: a Stable-Diffusion-style diffusers folder (UNet, VAE, DDIM scheduler and,
optionally, a CLIP text encoder with its tokenizer) and an open_clip checkpoint.  Shared by
the latent diffusion tests, the paper suite's end-to-end test and the benchmarks' ``--tiny``
runs (``benchmarks/random_weights.py``, ``benchmarks/clip_encoding.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

T = 1000

TOKENS, WIDTH = 8, 32  # the stand-in text encoder's sequence length and width (= cross_attention_dim)

UNET_CONFIG = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": WIDTH, "attention_head_dim": 8, "norm_num_groups": 8,
}
VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 4,
    "sample_size": 16, "scaling_factor": 2.0, "shift_factor": 0.1,
}
# SD's own schedule; clip_sample=True as in many checkpoints: the loader must switch it off
SCHEDULER_CONFIG = {
    "num_train_timesteps": T, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    "clip_sample": True, "set_alpha_to_one": False, "steps_offset": 1,
}
# like config.yaml's clip.model (timm's test_resnet at 16 px), narrower
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
                   "timm_proj": "linear", "image_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
}


def save_latent_checkpoint(root: Path) -> Path:
    """UNet, VAE and scheduler in the diffusers folder layout (safetensors), seeded."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(**UNET_CONFIG).save_pretrained(root / "unet", safe_serialization=True)
    AutoencoderKL(**VAE_CONFIG).save_pretrained(root / "vae", safe_serialization=True)
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    return root


def save_clip_text_encoder(root: Path) -> Path:
    """A tiny ``CLIPTextModel`` + ``CLIPTokenizer`` (own BPE vocabulary) as ``text_encoder/`` and ``tokenizer/``."""
    import transformers

    vocab = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
             "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    files = root / "tokenizer_source"
    files.mkdir(parents=True, exist_ok=True)
    (files / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (files / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=TOKENS)
    tokenizer.save_pretrained(root / "tokenizer")
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=TOKENS, bos_token_id=21, eos_token_id=22, pad_token_id=22)
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(root / "text_encoder", safe_serialization=True)
    return root


def save_tiny_clip(root: Path) -> Path:
    """A random open_clip CLIP as a ``local-dir`` checkpoint."""
    import open_clip

    from dicap.backbones.clip import save_local_dir

    torch.manual_seed(0)
    save_local_dir(open_clip.CLIP(**CLIP_CONFIG).eval(), CLIP_CONFIG, root)
    return root
