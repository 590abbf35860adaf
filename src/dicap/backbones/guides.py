"""Anti-causal predictors that steer denoising towards ``y_cf``: one interface, two kinds.

* ``cfg`` - the implicit classifier of a class-conditional diffusion model trained with
  label dropout: ``eps_hat = eps(x_t) + s * (eps(x_t, y_cf) - eps(x_t))``.
* ``classifier`` - an explicit noise-aware classifier ``p(y | x_t, t)`` trained on noised
  images: ``eps_hat = eps(x_t) - s * sqrt(1 - abar_t) * grad log p(y_cf | x_t)``.

A classifier trained on clean images (or CLIP on raw noisy images) would produce
adversarial colour noise rather than a changed object, hence the noise-aware one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dicap.backbones.diffusion import DiffusionBundle, make_schedule, pixels_to_model
from dicap.io import load_state_dict, read_json, save_state_dict, write_json
from dicap.runtime import device, optimizer_step

CLASSIFIER_WEIGHTS = "noisy_classifier.safetensors"
CLASSIFIER_INFO = "noisy_classifier.json"


class Guide(Protocol):
    """Turns the diffusion model's prediction at ``x_t`` into a guided one towards ``y_cf``."""

    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, scale: float) -> torch.Tensor: ...

    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """The guide's own posterior over classes for clean images in [-1, 1]."""
        ...


class ClassifierFreeGuide:
    """The implicit classifier of a label-dropout diffusion model."""

    def __init__(self, diffusion: DiffusionBundle, probe_timesteps: tuple[int, ...] = (100, 250, 400)):
        self.diffusion = diffusion
        self.probe_timesteps = probe_timesteps

    @torch.no_grad()
    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, scale: float) -> torch.Tensor:
        null = torch.full_like(y_cf, self.diffusion.null_label)
        # s = 0 and s = 1 need one of the two scores only: half the UNet work.
        if scale == 0:
            return self.diffusion.eps(x_t, t, null)
        if scale == 1:
            return self.diffusion.eps(x_t, t, y_cf)
        both = self.diffusion.eps(torch.cat([x_t, x_t]), t, torch.cat([null, y_cf]))
        eps_marginal, eps_cond = both.chunk(2)
        return eps_marginal + scale * (eps_cond - eps_marginal)

    @torch.no_grad()
    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """Diffusion-classifier posterior: softmax of minus the denoising error per class.

        Fixed noise per image (seeded) keeps the estimate deterministic.
        """
        n, k = len(x0), self.diffusion.n_classes
        gen = torch.Generator(device="cpu").manual_seed(0)
        err = torch.zeros(n, k)
        for t in self.probe_timesteps:
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            a = self.diffusion.alpha(t)
            x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * noise
            for y in range(k):
                labels = torch.full((n,), y, device=x0.device, dtype=torch.long)
                err[:, y] += (self.diffusion.eps(x_t, t, labels) - noise).pow(2).flatten(1).sum(1).cpu()
        return torch.softmax(-err / len(self.probe_timesteps), dim=1)


class NoisyClassifier(nn.Module):
    """A small CNN for ``p(y | x_t, t)``: timestep embedding added to every block."""

    def __init__(self, n_classes: int, width: int = 32):
        super().__init__()
        if width % 2:
            raise ValueError(f"noise-aware classifier width must be even (sin and cos halves), got {width}")
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, width * 2), nn.SiLU(), nn.Linear(width * 2, width * 2))
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width * 2, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(width * 2, width * 2, 3, padding=1, stride=2)
        self.head = nn.Linear(width * 2, n_classes)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.time_mlp(torch.cat([angles.sin(), angles.cos()], dim=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x_t))
        h = F.silu(self.conv2(h)) + self.time_embedding(t)[:, :, None, None]
        h = F.silu(self.conv3(h))
        return self.head(h.mean(dim=(2, 3)))


class NoisyClassifierGuide:
    """Classifier guidance with a noise-aware classifier."""

    def __init__(self, diffusion: DiffusionBundle, classifier: NoisyClassifier):
        self.diffusion = diffusion
        self.classifier = classifier

    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, scale: float) -> torch.Tensor:
        with torch.no_grad():
            eps = self.diffusion.eps(x_t, t, torch.full_like(y_cf, self.diffusion.null_label))
        if scale == 0:
            return eps
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            ts = torch.full((len(x),), t, device=x.device, dtype=torch.long)
            log_p = F.log_softmax(self.classifier(x, ts), dim=1).gather(1, y_cf[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        return eps - scale * math.sqrt(1 - self.diffusion.alpha(t)) * grad

    @torch.no_grad()
    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x0, torch.zeros(len(x0), dtype=torch.long, device=x0.device)), dim=1).cpu()


def train_noisy_classifier(
    images: np.ndarray, labels: np.ndarray, n_classes: int, train: dict[str, Any], out_dir: str | Path, seed: int
) -> list[float]:
    """Fit ``p(y | x_t, t)`` on images noised by the diffusion model's own schedule."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = pixels_to_model(images), torch.as_tensor(labels, dtype=torch.long)
    abar = make_schedule(train["num_train_timesteps"])
    dev = device()
    model = NoisyClassifier(n_classes, train["width"]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"])
    losses = []
    for _ in tqdm(range(train["steps"]), desc="noise-aware classifier", mininterval=5):
        idx = torch.randint(len(x_all), (train["batch_size"],), generator=gen)
        t = torch.randint(len(abar), (len(idx),), generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x_all[idx] + (1 - a).sqrt() * torch.randn(x_all[idx].shape, generator=gen)
        losses.append(optimizer_step(opt, F.cross_entropy(model(x_t.to(dev), t.to(dev)), y_all[idx].to(dev))))
    out = Path(out_dir)
    save_state_dict(out / CLASSIFIER_WEIGHTS, model)
    write_json(out / CLASSIFIER_INFO, {"n_classes": n_classes, "width": train["width"]})
    return losses


def load_noisy_classifier(path: str | Path) -> NoisyClassifier:
    path = Path(path)
    info = read_json(path / CLASSIFIER_INFO)
    model = NoisyClassifier(info["n_classes"], info["width"])
    load_state_dict(path / CLASSIFIER_WEIGHTS, model)
    return model.eval().requires_grad_(False)


def make_guide(kind: str, diffusion: DiffusionBundle, classifier_dir: str | Path | None = None) -> Guide:
    if kind == "cfg":
        return ClassifierFreeGuide(diffusion)
    if kind == "classifier":
        if classifier_dir is None:
            raise ValueError("guide 'classifier' needs a trained noise-aware classifier directory")
        return NoisyClassifierGuide(diffusion, load_noisy_classifier(classifier_dir))
    raise ValueError(f"unknown guide kind {kind!r}; expected 'cfg' or 'classifier'")
