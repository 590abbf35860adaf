"""Stand-ins for the latent diffusion tests (tests/unit/backbones/, tests/unit/counterfactual/): a
small text encoder in place of the checkpoint's own, the slice of a dataset store that
``generate()`` reads, and smooth random images.  The tiny diffusers checkpoint itself comes from
``dicap.testing.tiny_models``."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import torch

from dicap.testing.tiny_models import TOKENS, WIDTH

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


class TinyStore:
    """The slice of DatasetStore that generate() uses."""

    dataset = "paper"

    def __init__(self, images: np.ndarray):
        self.images = {"train": images}

    def pixels(self, rows: pd.DataFrame) -> np.ndarray:
        return self.images["train"][rows["index"].to_numpy()]


def pixels(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` smooth-ish uint8 images: a random low-resolution pattern upsampled."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.as_tensor(low).permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy()


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())
