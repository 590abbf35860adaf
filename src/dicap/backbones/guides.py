"""Anti-causal predictors that steer denoising towards ``y_cf``: one interface, three guides.

* ``cfg`` - the implicit classifier of a class-conditional diffusion model trained with
  label dropout (or of a text-conditional one, prompts for labels and the empty prompt for
  none): ``eps_hat = eps(x_t) + s * (eps(x_t, y_cf) - eps(x_t))``.
* ``classifier`` - an explicit noise-aware classifier ``p(y | x_t, t)`` trained on noised
  images: ``eps_hat = eps(x_t) - s * sqrt(1 - abar_t) * grad log p(y_cf | x_t)``.
* ``clip`` - CLIP's zero-shot posterior on the *predicted clean image*
  ``x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps(x_t)) / sqrt(abar_t)`` (decoded by the VAE for
  a latent model): ``eps_hat = eps(x_t) - s * sqrt(1 - abar_t) * grad log p(y_cf | x0_hat(x_t))``.

A classifier applied to raw noisy images (CLIP included) would produce adversarial colour
noise rather than a changed object, hence the noise-aware one, or CLIP on ``x0_hat``.

**One score for abduction and action.**  Abduction (DDIM inversion) must walk up with the
score the action walks down with, else the recovered noise is not the one the action
explains, and even a zero intervention changes the image.  Each guide names that score,
``abduction_eps(x_t, t, y)``, and the scale at which its action *is* that score,
``abduction_scale``:

* ``classifier`` and ``clip`` - the marginal score ``eps(x_t)``, as in Diff-SCM (Sanchez &
  Tsaftaris 2022): the action is that score plus ``s`` times the anti-causal predictor's
  gradient, so at ``s = 0`` it changes nothing;
* ``cfg`` - the conditional score of the source class, ``eps(x_t, y)``: written as
  ``eps(x_t, y_cf) + (s - 1) (eps(x_t, y_cf) - eps(x_t))``, the action is the conditional
  score of the new class plus ``s - 1`` times the implicit classifier's gradient, so the
  intervention replaces ``y`` by ``y_cf`` in the score abduction used, and at ``s = 1``
  towards ``y`` the round trip changes nothing.  Inverting with the marginal score instead
  would leave the class in the recovered noise, for the action to fight.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dicap.backbones.diffusion import DiffusionBundle, make_schedule, pixels_to_model
from dicap.io import load_state_dict, read_json, save_state_dict, write_json
from dicap.runtime import device, optimizer_step

GUIDES = ("cfg", "classifier", "clip")  # the names make_guide knows (counterfactual.guide)
CLASSIFIER_WEIGHTS = "noisy_classifier.safetensors"
CLASSIFIER_INFO = "noisy_classifier.json"
# Rows per backward pass through the VAE decoder and CLIP in the ``clip`` guide: a 512 px
# decode of a larger batch does not fit beside Stable Diffusion on one GPU, and each row's
# gradient depends on that row alone, so the result is the same for any value.
CLIP_GRAD_BATCH_SIZE = 2


class Guide(Protocol):
    """Turns the diffusion model's prediction at ``x_t`` into a guided one towards ``y_cf``."""

    # The guidance scale at which ``guided_eps(x_t, t, y, s)`` is ``abduction_eps(x_t, t, y)``.
    abduction_scale: float

    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, guidance_scale: float) -> torch.Tensor: ...

    def abduction_eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        """The score DDIM inversion walks up with, for images of class ``y``: the one the
        action starts from (module docstring)."""
        ...

    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """The guide's own posterior over classes for clean images in [-1, 1]."""
        ...

    def to(self, device: torch.device | str) -> "Guide":
        """Move the guide's own networks (if any) to ``device``."""
        ...


class Posterior(Protocol):
    """A class posterior on clean model-space images, ``(N, ...) -> (N, n_classes)`` on the CPU."""

    def __call__(self, x0: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device | str) -> "Posterior": ...


class ClassifierFreeGuide:
    """The implicit classifier of a label-dropout (or text-conditional) diffusion model.

    ``class_probs`` is, by default, the diffusion model's own classifier (the denoising
    error of every class: ``n_classes x len(probe_timesteps)`` UNet calls per image).  That is
    the faithful "guide's posterior" for the embedded suite, but unaffordable for a
    Stable-Diffusion-sized UNet and 1000 ImageNet classes, so a ``posterior`` callable
    (clean model-space images -> (N, n_classes) probabilities on the CPU, e.g.
    :class:`ClipPosterior`: CLIP zero-shot on the decoded image) replaces it when given.
    ``make_guide`` passes one for latent models; guidance itself never uses it.
    Abduction uses the source class's conditional score: the action at ``s = 1``.
    """

    abduction_scale = 1.0

    def __init__(
        self,
        diffusion: DiffusionBundle,
        probe_timesteps: tuple[int, ...] = (100, 250, 400),
        posterior: Posterior | None = None,
    ):
        self.diffusion = diffusion
        self.probe_timesteps = probe_timesteps
        self.posterior = posterior

    def to(self, device: torch.device | str) -> "ClassifierFreeGuide":
        """Moves the posterior only: the diffusion model is moved by its owner."""
        if self.posterior is not None:
            self.posterior.to(device)
        return self

    @torch.no_grad()
    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        null = torch.full_like(y_cf, self.diffusion.null_label)
        # s = 0 and s = 1 need one of the two scores only: half the UNet work.
        if guidance_scale == 0:
            return self.diffusion.eps(x_t, t, null)
        if guidance_scale == 1:
            return self.diffusion.eps(x_t, t, y_cf)
        both = self.diffusion.eps(torch.cat([x_t, x_t]), t, torch.cat([null, y_cf]))
        eps_marginal, eps_cond = both.chunk(2)
        return eps_marginal + guidance_scale * (eps_cond - eps_marginal)

    @torch.no_grad()
    def abduction_eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        return self.diffusion.eps(x_t, t, y)

    @torch.no_grad()
    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """Diffusion-classifier posterior: softmax of minus the denoising error per class.

        Fixed noise per image (seeded) keeps the estimate deterministic.  With a
        ``posterior``, that posterior instead.
        """
        if self.posterior is not None:
            return self.posterior(x0)
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


@torch.no_grad()
def marginal_eps(diffusion: DiffusionBundle, x_t: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    """The marginal score ``eps(x_t)`` (the null label), float32: what classifier guidance
    adds its gradient to, and what it abducts with (Diff-SCM)."""
    return diffusion.eps(x_t, t, torch.full_like(like, diffusion.null_label)).float()


class NoisyClassifierGuide:
    """Classifier guidance with a noise-aware classifier; abduction with the marginal score."""

    abduction_scale = 0.0

    def __init__(self, diffusion: DiffusionBundle, classifier: NoisyClassifier):
        self.diffusion = diffusion
        self.classifier = classifier

    def to(self, device: torch.device | str) -> "NoisyClassifierGuide":
        self.classifier.to(device)
        return self

    def abduction_eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        return marginal_eps(self.diffusion, x_t, t, y)

    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        eps = marginal_eps(self.diffusion, x_t, t, y_cf)
        if guidance_scale == 0:
            return eps
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            ts = torch.full((len(x),), t, device=x.device, dtype=torch.long)
            log_p = F.log_softmax(self.classifier(x, ts), dim=1).gather(1, y_cf[:, None]).sum()
            (grad,) = torch.autograd.grad(log_p, x)
        return eps - guidance_scale * math.sqrt(1 - self.diffusion.alpha(t)) * grad

    @torch.no_grad()
    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x0, torch.zeros(len(x0), dtype=torch.long, device=x0.device)), dim=1).cpu()


class ClipPosterior:
    """CLIP's zero-shot posterior ``p(y | x)`` on clean model-space images, differentiable.

    ``decode`` maps the model's space to images in [-1, 1] (a latent model's VAE decoder,
    the identity for a pixel model); ``p(y | x) = softmax(logit_scale * f(x) . t_y)`` with
    L2-normalised CLIP image features ``f`` and class text features ``t``.
    """

    def __init__(self, clip: Any, text_features: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 8):
        self.clip = clip  # a ClipBundle
        self.text = F.normalize(torch.as_tensor(text_features).float(), dim=-1)
        self.decode = decode
        self.batch_size = batch_size
        self.logit_scale = float(clip.model.logit_scale.exp().clamp(max=100))  # every open_clip model has one

    @classmethod
    def from_classes(
        cls, clip: Any, class_names: Sequence[str], template: str, decode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 8
    ) -> "ClipPosterior":
        return cls(clip, clip.encode_texts([template.format(c) for c in class_names]), decode, batch_size)

    def to(self, device: torch.device | str) -> "ClipPosterior":
        self.clip.model.to(device)
        self.text = self.text.to(device)
        return self

    @property
    def n_classes(self) -> int:
        return len(self.text)

    def log_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """log p(y | x0) for all classes, (N, K); differentiable in ``x0``."""
        x01 = ((self.decode(x0) + 1) / 2).clamp(0, 1)
        param = next(self.clip.model.parameters())
        feats = self.clip.model.encode_image(self.clip.normalise(x01).to(param.device, param.dtype), normalize=True).float()
        return F.log_softmax(self.logit_scale * feats @ self.text.to(feats.device).T, dim=1)

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        """p(y | x0), (N, K) on the CPU, in batches."""
        out = [self.log_probs(x0[i : i + self.batch_size]).exp().cpu() for i in range(0, len(x0), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.n_classes)


class ClipPosteriorGuide:
    """Classifier guidance with CLIP's zero-shot posterior on the predicted clean image.

    At ``x_t`` the unconditional (null-prompt) noise gives ``x0_hat``; CLIP judges its
    decoding and ``eps_hat = eps - s * sqrt(1 - abar_t) * grad_{x_t} log p(y_cf | x0_hat(x_t))``.
    By default ``eps`` is held constant in the gradient (``d x0_hat / d x_t = 1 / sqrt(abar_t)``):
    no backward pass through the UNet, a fraction of the memory.  ``backprop_unet=True`` takes
    the full derivative through the UNet instead.  Gradients go through the VAE decoder and
    CLIP in micro-batches of ``grad_batch_size`` rows (all rows when None): each row's
    gradient depends on that row alone.  Abduction uses the marginal score.
    """

    abduction_scale = 0.0

    def __init__(self, diffusion: DiffusionBundle, posterior: ClipPosterior, backprop_unet: bool = False, grad_batch_size: int | None = None):
        self.diffusion = diffusion
        self.posterior = posterior
        self.backprop_unet = backprop_unet
        self.grad_batch_size = grad_batch_size

    def to(self, device: torch.device | str) -> "ClipPosteriorGuide":
        self.posterior.to(device)
        return self

    def grad_log_p(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} log p(y_cf | x0_hat(x_t)), row by row (float32)."""
        a = self.diffusion.alpha(t)
        null = torch.full_like(y_cf, self.diffusion.null_label)
        step = self.grad_batch_size or len(x_t)
        grads = []
        with torch.enable_grad():
            for i in range(0, len(x_t), step):
                x = x_t[i : i + step].detach().float().requires_grad_(True)
                e = self.diffusion.eps(x, t, null[i : i + step]) if self.backprop_unet else eps[i : i + step].detach()
                x0_hat = (x - math.sqrt(1 - a) * e) / math.sqrt(a)
                log_p = self.posterior.log_probs(x0_hat).gather(1, y_cf[i : i + step, None].to(x.device)).sum()
                (grad,) = torch.autograd.grad(log_p, x)
                grads.append(grad)
        return torch.cat(grads)

    def abduction_eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor) -> torch.Tensor:
        return marginal_eps(self.diffusion, x_t, t, y)

    def guided_eps(self, x_t: torch.Tensor, t: int, y_cf: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        eps = marginal_eps(self.diffusion, x_t, t, y_cf)
        if guidance_scale == 0:
            return eps
        return eps - guidance_scale * math.sqrt(1 - self.diffusion.alpha(t)) * self.grad_log_p(x_t, t, y_cf, eps)

    @torch.no_grad()
    def class_probs(self, x0: torch.Tensor) -> torch.Tensor:
        return self.posterior(x0)


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


def make_guide(
    guide: str,
    diffusion: DiffusionBundle,
    classifier_dir: str | Path | None = None,
    *,
    clip: Any = None,
    class_names: Sequence[str] | None = None,
    template: str | None = None,
    text_features: torch.Tensor | np.ndarray | None = None,
    cfg_posterior: str | None = None,
    backprop_unet: bool = False,
    grad_batch_size: int | None = None,
    posterior_batch_size: int = 8,
) -> Guide:
    """The guide named ``guide``: ``cfg``, ``classifier`` (needs ``classifier_dir``) or ``clip``.

    ``clip`` (a :class:`~dicap.backbones.clip.ClipBundle`) with either ``text_features``
    (K, D) or ``class_names`` + ``template`` gives the CLIP posterior the ``clip`` guide
    steers with.  ``cfg_posterior`` chooses what the ``cfg`` guide reports as its
    ``class_probs``: ``"diffusion"`` (the diffusion classifier) or ``"clip"`` (CLIP zero-shot
    on the decoded image); None means ``"clip"`` for a latent model, where the diffusion
    classifier is unaffordable, and ``"diffusion"`` otherwise (the embedded suite).
    """

    def posterior() -> ClipPosterior:
        if clip is None or (text_features is None and (class_names is None or template is None)):
            hint = " (or cfg_posterior='diffusion' for the slow diffusion classifier)" if guide == "cfg" else ""
            raise ValueError(f"guide {guide!r} needs clip= and either text_features= or class_names= and template={hint}")
        if text_features is not None:
            return ClipPosterior(clip, torch.as_tensor(text_features), diffusion.decode, posterior_batch_size)
        return ClipPosterior.from_classes(clip, class_names, template, diffusion.decode, posterior_batch_size)

    if guide == "cfg":
        from dicap.backbones.latent_diffusion import LatentDiffusionBundle

        which = cfg_posterior or ("clip" if isinstance(diffusion, LatentDiffusionBundle) else "diffusion")
        if which not in ("clip", "diffusion"):
            raise ValueError(f"unknown cfg posterior {which!r}; expected 'clip' or 'diffusion'")
        return ClassifierFreeGuide(diffusion, posterior=posterior() if which == "clip" else None)
    if guide == "classifier":
        if classifier_dir is None:
            raise ValueError("guide 'classifier' needs a trained noise-aware classifier directory")
        return NoisyClassifierGuide(diffusion, load_noisy_classifier(classifier_dir))
    if guide == "clip":
        return ClipPosteriorGuide(diffusion, posterior(), backprop_unet=backprop_unet, grad_batch_size=grad_batch_size)
    raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
