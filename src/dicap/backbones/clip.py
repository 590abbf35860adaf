"""CLIP through open_clip: the tiny embedded model and pretrained ones share one loader.

The embedded suite trains a small open_clip ``CLIP`` from a config written as data and
saves it as an open_clip ``local-dir`` checkpoint (``open_clip_config.json`` plus
``open_clip_model.safetensors``); loading it goes through ``open_clip.create_model`` exactly
as a downloaded checkpoint would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dicap.io import check_arrays, load_arrays, read_json, save_arrays, save_state_dict, write_json
from dicap.runtime import device, optimizer_step

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
PRETRAINED_FILE = "pretrained.json"  # the paper suite's model dir: which pretrained CLIP to load
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_FEATURES_KEY = "features"  # the array in a class-text-features file
ROWS_PER_CHUNK = 1024  # images decoded at once by encode_rows: a real test split does not fit in memory
# How features are computed (clip.pretrained.precision; "bf16" weights only through the API:
# prompt learners train fp32 context vectors through the text tower, which bf16 weights refuse).
PRECISIONS = ("fp32", "bf16_autocast", "bf16")


class PixelSource(Protocol):
    """What :meth:`ClipBundle.encode_rows` reads images from (a dataset store)."""

    def pixels(self, rows: Any) -> np.ndarray: ...


@dataclass
class ClipBundle:
    """A frozen CLIP with what is needed to feed it: tokenizer and pixel normalisation.

    ``precision`` says how :meth:`encode_images` and :meth:`encode_texts` run the model:
    ``fp32``; ``bf16_autocast`` (fp32 weights, matmuls in bfloat16); or ``bf16`` (the model's
    weights are bfloat16: :func:`load_clip` casts them, and inputs follow the parameters'
    dtype).  Features come back float32 in every case.
    """

    model: "torch.nn.Module"
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown CLIP precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")

    def pixels_to_input(self, images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float32 (N, 3, S, S) at the model's resolution.

        The uint8 images travel to ``device`` first (a quarter of float32's bytes; pinned and
        non-blocking on CUDA), and the conversion, the bicubic resize and the normalisation run
        there: on the CPU, resizing 512 px images capped a GPU's throughput (benchmarks/clip_encoding.py).  With
        ``device`` None (or the CPU) every operation is today's, in the same order.
        """
        x = torch.as_tensor(images)
        if device is not None and torch.device(device).type == "cuda":
            x = (x.pin_memory() if x.device.type == "cpu" else x).to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return self.normalise(x)

    def normalise(self, x01: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], (N, 3, H, W) -> model input; differentiable."""
        if x01.shape[-1] != self.image_size:
            x01 = F.interpolate(x01, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=x01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x01.device).view(1, 3, 1, 1)
        return (x01 - mean) / std

    def _autocast(self, device: torch.device) -> Any:
        """bfloat16 autocast for ``bf16_autocast``, a null context otherwise."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16_autocast")

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised float32 image features for uint8 images, in batches.

        Preprocessing runs on the model's device (:meth:`pixels_to_input`); the input takes the
        parameters' dtype, so bf16 weights are fed bf16.
        """
        param = next(self.model.parameters())
        out = []
        for i in range(0, len(images), batch_size):
            x = self.pixels_to_input(images[i : i + batch_size], param.device).to(param.device, param.dtype)
            with self._autocast(param.device):
                out.append(self.model.encode_image(x, normalize=True).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def encode_rows(self, store: PixelSource, rows: Any, chunk: int = ROWS_PER_CHUNK) -> np.ndarray:
        """Image features of a store's table rows, decoding at most ``chunk`` images at a time.

        ``chunk`` is a multiple of :meth:`encode_images`' batch, so the batches - and the
        bytes - are those of one call over all rows.
        """
        parts = [self.encode_images(store.pixels(rows.iloc[i : i + chunk])).numpy() for i in range(0, len(rows), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text features; chunked so 1000 class prompts never go through at once."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            with self._autocast(device):
                out.append(self.model.encode_text(self.tokenizer(texts[i : i + batch_size]).to(device), normalize=True).float().cpu())
        return torch.cat(out)


def load_clip(spec: dict[str, Any], precision: str | None = None) -> ClipBundle:
    """Load a frozen CLIP from ``spec``.

    ``{"path": dir}`` is a model directory written by the ``clip_backbone`` rule: an open_clip
    ``local-dir`` checkpoint (embedded suite) or a ``pretrained.json`` naming a pretrained
    model (paper suite); ``{"model", "tag", "cache_dir"}`` names a pretrained model directly:
    an open_clip tag such as ``openai`` (from ``cache_dir`` or, with network, the hub) or a
    local weights file.  Both suites then take the same ``create_model_and_transforms`` path.

    ``precision`` (see :class:`ClipBundle`) defaults to the spec's ``precision`` (the paper
    config's ``clip.pretrained.precision``) where the job runs on CUDA, and to ``fp32`` on a
    CPU - as ``diffusion.pretrained.dtype``; ``bf16`` casts the weights here.
    """
    import open_clip

    if "path" in spec and (Path(spec["path"]) / PRETRAINED_FILE).exists():
        spec = read_json(Path(spec["path"]) / PRETRAINED_FILE)
    if "path" in spec:
        name, pretrained = f"local-dir:{spec['path']}", None
        if not (Path(spec["path"]) / CONFIG_FILE).exists():
            raise FileNotFoundError(f"no CLIP checkpoint at {spec['path']} (missing {CONFIG_FILE} or {PRETRAINED_FILE})")
        check_arrays(Path(spec["path"]) / WEIGHTS_FILE)  # open_clip's own error names no file
    else:
        name, pretrained = spec["model"], spec["tag"]
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, cache_dir=spec.get("cache_dir"), load_weights=True
    )
    model.eval().requires_grad_(False)
    if precision is None:
        precision = spec.get("precision", "fp32") if device().type == "cuda" else "fp32"
    if precision == "bf16":
        model.to(torch.bfloat16)
    cfg = model.visual.preprocess_cfg  # create_model always sets it
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        image_size=int(size),
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
        precision=precision,
    )


def write_pretrained_pointer(spec: dict[str, Any], out_dir: str | Path) -> None:
    """The paper suite's model folder: which pretrained CLIP :func:`load_clip` loads."""
    write_json(Path(out_dir) / PRETRAINED_FILE, spec)


def save_class_text_features(path: str | Path, features: np.ndarray) -> None:
    """The (K, D) text features of every class's zero-shot prompt: the ``similarity`` sampling's input."""
    save_arrays(path, {TEXT_FEATURES_KEY: np.asarray(features).astype(np.float32)})


def load_class_text_features(path: str | Path) -> np.ndarray:
    arrays = load_arrays(path)
    if TEXT_FEATURES_KEY not in arrays:
        raise KeyError(f"{path} holds no {TEXT_FEATURES_KEY!r} array (it has: {', '.join(arrays)}); rerun clip_backbone")
    return arrays[TEXT_FEATURES_KEY]


def save_local_dir(model: "torch.nn.Module", model_cfg: dict[str, Any], out_dir: str | Path) -> None:
    """Write an open_clip ``local-dir`` checkpoint."""
    out = Path(out_dir)
    write_json(out / CONFIG_FILE, {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"size": model_cfg["vision_cfg"]["image_size"], "mean": OPENAI_MEAN, "std": OPENAI_STD},
    })
    save_state_dict(out / WEIGHTS_FILE, model)


def train_tiny_clip(
    images: np.ndarray,
    captions: list[str],
    model_cfg: dict[str, Any],
    train: dict[str, Any],
    out_dir: str | Path,
    seed: int,
) -> list[float]:
    """Pretrain a tiny CLIP with the CLIP contrastive loss on captioned images; returns losses."""
    import open_clip

    dev = device()
    generator = torch.Generator().manual_seed(seed)  # batches drawn on the CPU: same data on any device
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).to(dev)
    tokenizer = open_clip.tokenize
    bundle = ClipBundle(model, tokenizer, model_cfg["vision_cfg"]["image_size"], OPENAI_MEAN, OPENAI_STD)
    tokens = open_clip.tokenize(captions, context_length=model_cfg["text_cfg"]["context_length"])
    pixels = torch.as_tensor(images)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    steps, warmup = train["steps"], max(1, train["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(1, steps)))
    )
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="clip pretraining", mininterval=5):
        idx = torch.randint(len(pixels), (train["batch_size"],), generator=generator)
        x = _augment(bundle.pixels_to_input(pixels[idx]), generator).to(dev)
        img_f, txt_f, logit_scale = model(x, tokens[idx].to(dev))
        losses.append(optimizer_step(opt, loss_fn(img_f, txt_f, logit_scale), sched))
    model.eval()
    save_local_dir(model, model_cfg, out_dir)
    return losses


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random shifts: cheap invariance that keeps every factor recognisable."""
    shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3))
