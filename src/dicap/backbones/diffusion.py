"""The class-conditional diffusion model (diffusers ``UNet2DModel``) and its DDIM maths.

The embedded suite trains a tiny UNet as a DDPM with label dropout: class id ``n_classes``
means "no label", so one network gives both the conditional score ``eps(x_t, y)`` and the
marginal one ``eps(x_t)`` that classifier-free guidance combines.  Weights are saved with
``save_pretrained`` (safetensors) and loaded with ``from_pretrained``, the same path a
pretrained checkpoint takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dicap.io import check_arrays, read_json, write_json
from dicap.runtime import device, optimizer_step

UNET_DIR = "unet"
INFO_FILE = "diffusion.json"


class NoiseSchedule:
    """What DDIM and the guides read of any diffusion bundle, pixel or latent: the schedule,
    and the label that means "no class" (the last one)."""

    alphas_cumprod: torch.Tensor  # (T,)
    n_classes: int

    @property
    def null_label(self) -> int:
        return self.n_classes

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0


@dataclass
class DiffusionBundle(NoiseSchedule):
    """A frozen noise predictor with its noise schedule, working on images in [-1, 1]."""

    unet: "torch.nn.Module"
    alphas_cumprod: torch.Tensor  # (T,)
    n_classes: int

    def eps(self, x_t: torch.Tensor, t: int, labels: torch.Tensor) -> torch.Tensor:
        """Predicted noise at integer timestep ``t`` for class ids ``labels`` (null = marginal)."""
        timesteps = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
        return self.unet(x_t, timesteps, class_labels=labels).sample

    def to(self, device: "str | torch.device") -> "DiffusionBundle":
        self.unet.to(device)
        return self

    def to_model(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the model's space: pixels in [-1, 1] (N, 3, H, W)."""
        return pixels_to_model(images)

    def to_pixels(self, x: torch.Tensor, size: "tuple[int, int] | None" = None) -> np.ndarray:
        """The model's space -> uint8 (N, H, W, 3); ``size`` (H, W) must be the model's own."""
        if size is not None and tuple(size) != tuple(x.shape[-2:]):
            raise ValueError(f"a pixel-space diffusion model works at its images' size {tuple(x.shape[-2:])}, not {tuple(size)}")
        return model_to_pixels(x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The model's space -> images in [-1, 1]: the identity here (latent models decode)."""
        return x


def pixels_to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def model_to_pixels(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


CLASS_MAP_FILE = "class_map.safetensors"


class ClassMapUNet(torch.nn.Module):
    """A ``UNet2DModel`` that also sees its class as extra input channels.

    diffusers adds the class embedding to the timestep embedding, which reaches the
    convolutions only as a per-channel shift; a tiny UNet trained briefly then barely uses
    its class (samples from noise read as the requested digit 13% of the time).  A learned
    class map concatenated to the noisy image conditions the very first convolution at every
    pixel, and the class is learnt within the same training budget (docs/decisions.md).
    """

    def __init__(self, unet: "torch.nn.Module", n_labels: int, channels: int):
        super().__init__()
        self.unet = unet
        self.class_map = torch.nn.Embedding(n_labels, channels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor) -> Any:
        cond = self.class_map(class_labels)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return self.unet(torch.cat([x, cond.to(x.dtype)], dim=1), timesteps, class_labels=class_labels)

    def save_pretrained(self, path: str | Path, safe_serialization: bool = True) -> None:
        from dicap.io import save_arrays

        self.unet.save_pretrained(path, safe_serialization=safe_serialization)
        save_arrays(Path(path) / CLASS_MAP_FILE, {"weight": self.class_map.weight.detach().cpu().numpy()})


def build_unet(image_size: int, n_classes: int, model_cfg: dict[str, Any]) -> "torch.nn.Module":
    from diffusers import UNet2DModel

    channels = tuple(model_cfg["block_out_channels"])
    class_channels = model_cfg.get("class_channels", 0)
    attention = model_cfg.get("attention", True)  # self-attention at the lowest resolution
    unet = UNet2DModel(
        sample_size=image_size,
        in_channels=3 + class_channels,
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=model_cfg["layers_per_block"],
        down_block_types=("DownBlock2D",) * (len(channels) - 1) + (("AttnDownBlock2D",) if attention else ("DownBlock2D",)),
        up_block_types=(("AttnUpBlock2D",) if attention else ("UpBlock2D",)) + ("UpBlock2D",) * (len(channels) - 1),
        norm_num_groups=model_cfg["norm_num_groups"],
        num_class_embeds=n_classes + 1,
        # "scale_shift": adaptive group norm, the class and time scale the features as well as shift them
        resnet_time_scale_shift="scale_shift" if model_cfg.get("time_conditioning") == "scale_shift" else "default",
    )
    return ClassMapUNet(unet, n_classes + 1, class_channels) if class_channels else unet


def make_schedule(num_train_timesteps: int) -> torch.Tensor:
    """alphas_cumprod of diffusers' DDIM scheduler with ``clip_sample=False``.

    The schedulers' default ``clip_sample=True`` clamps the predicted clean image and
    ruins the inversion round trip, so it is switched off explicitly.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    return sched.alphas_cumprod.clone().float()


def train_unet(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    model_cfg: dict[str, Any],
    train: dict[str, Any],
    out_dir: str | Path,
    seed: int,
) -> list[float]:
    """Train a class-conditional DDPM with label dropout; returns per-step losses."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = pixels_to_model(images)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    dev = device()
    unet = build_unet(images.shape[1], n_classes, model_cfg).to(dev)
    abar = make_schedule(train["num_train_timesteps"])
    opt = torch.optim.AdamW(unet.parameters(), lr=train["lr"], weight_decay=0.0)
    steps = train["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(1, steps)))))
    losses = []
    unet.train()
    for _ in tqdm(range(steps), desc="unet training", mininterval=5):
        idx = torch.randint(len(x_all), (train["batch_size"],), generator=generator)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(y), generator=generator) < train["label_dropout"]] = n_classes
        t = torch.randint(len(abar), (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(x_t.to(dev), t.to(dev), class_labels=y.to(dev)).sample, noise.to(dev))
        losses.append(optimizer_step(opt, loss, sched))
    unet.eval()
    out = Path(out_dir)
    unet.save_pretrained(out / UNET_DIR, safe_serialization=True)
    write_json(out / INFO_FILE, {"n_classes": n_classes, "num_train_timesteps": train["num_train_timesteps"]})
    return losses


def load_diffusion(path: str | Path) -> DiffusionBundle:
    from diffusers import UNet2DModel

    path = Path(path)
    if not (path / INFO_FILE).exists():
        raise FileNotFoundError(f"no diffusion model at {path} (missing {INFO_FILE})")
    info = read_json(path / INFO_FILE)
    for weights in sorted((path / UNET_DIR).glob("*.safetensors")):
        check_arrays(weights)  # diffusers' own error names no file
    unet = UNet2DModel.from_pretrained(path / UNET_DIR, use_safetensors=True)
    if (path / UNET_DIR / CLASS_MAP_FILE).exists():
        from dicap.io import load_arrays

        weight = torch.as_tensor(load_arrays(path / UNET_DIR / CLASS_MAP_FILE)["weight"])
        unet = ClassMapUNet(unet, *weight.shape)
        unet.class_map.weight.data.copy_(weight)
    unet.eval().requires_grad_(False)
    return DiffusionBundle(unet, make_schedule(info["num_train_timesteps"]), info["n_classes"])
