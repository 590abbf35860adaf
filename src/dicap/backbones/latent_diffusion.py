"""The paper suite's diffusion model: a pretrained text-conditional latent diffusion model.

A Stable-Diffusion-style diffusers checkpoint (``unet/``, ``vae/``, ``scheduler/`` and, for
the prompts, ``text_encoder/`` + ``tokenizer/``) behind the interface of the embedded
suite's :class:`~dicap.backbones.diffusion.DiffusionBundle`, so that DDIM inversion,
regeneration, the guides and ``generate()`` run unchanged:

* a *label* indexes a table of precomputed prompt embeddings: label ``y < n_classes`` is
  ``template.format(class_names[y])`` and the null label ``n_classes`` is the empty prompt
  ``""`` (the unconditional score classifier-free guidance needs).  The table is computed
  once at load, in chunks (1000 ImageNet prompts never go through the text encoder at once);
  ``eps`` gathers each row's embedding by its label;
* the "model space" is the VAE's latent space: ``to_model`` resizes uint8 images to the
  model's resolution and encodes them with the posterior *mean* (not a sample, so that
  inversion is reproducible) times the VAE's scaling factor; ``to_pixels`` decodes back;
* the noise schedule is the checkpoint's own (e.g. ``scaled_linear`` for SD 1.x/2.x), read
  from its scheduler config as a DDIM scheduler with ``clip_sample=False``;
* the UNet and VAE may run in bf16/fp16 (``dtype``); everything ``eps`` returns is float32,
  so the DDIM maths in :mod:`dicap.counterfactual.ddim` stay in float32.

The default text encoder is the checkpoint's ``CLIPTextModel`` (``transformers``); any
callable ``list[str] -> (N, L, D)`` may encode the prompts instead.

The ``diffusion_backbone`` rule of the paper suite trains nothing: it checks that the
checkpoint named in config is really there (a local folder, or a hub id already in the
cache) and writes ``pretrained.json``; every shard then loads the model that file names
(:func:`load_from_dir`).  A missing checkpoint so fails in one CPU job, not in every GPU job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dicap.backbones.diffusion import NoiseSchedule, model_to_pixels, pixels_to_model

TextEncoder = Callable[[list[str]], torch.Tensor]
"""Prompts -> per-token embeddings (N, L, D): the UNet's ``encoder_hidden_states``."""

PRETRAINED_FILE = "pretrained.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SUBFOLDERS = ("unet", "vae", "scheduler")


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """``"float32" | "bfloat16" | "float16"`` (or a torch dtype); None: bf16 on CUDA, else float32."""
    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported diffusion dtype {dtype}; expected one of {sorted(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown diffusion dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bicubic (antialiased when shrinking) resize of (N, C, H, W) images in [-1, 1]; differentiable."""
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def prompts_for(class_names: Sequence[str], template: str) -> list[str]:
    """The prompt of every label, then the null label's empty prompt."""
    return [template.format(c) for c in class_names] + [""]


@torch.no_grad()
def embed_prompts(encode: TextEncoder, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Run ``encode`` over ``prompts`` in chunks; float32 (N, L, D) on the CPU."""
    out = [encode(prompts[i : i + batch_size]).float().cpu() for i in range(0, len(prompts), batch_size)]
    return torch.cat(out)


@dataclass(eq=False)
class LatentDiffusionBundle(NoiseSchedule):
    """A frozen text-conditional latent noise predictor with its VAE and noise schedule.

    Same interface as :class:`~dicap.backbones.diffusion.DiffusionBundle` (``eps``, ``alpha``,
    ``alphas_cumprod``, ``n_classes``, ``null_label``, ``num_train_timesteps``, ``unet``,
    ``to``, ``to_model``, ``to_pixels``, ``decode``), working on VAE latents.
    """

    unet: "torch.nn.Module"  # diffusers UNet2DConditionModel
    vae: "torch.nn.Module"  # diffusers AutoencoderKL
    alphas_cumprod: torch.Tensor  # (T,) float32
    prompt_embeddings: torch.Tensor  # (n_classes + 1, L, D); row n_classes: the empty prompt
    image_size: int  # the resolution images are encoded at
    prediction_type: str = "epsilon"
    vae_batch_size: int = 8  # images per VAE call when encoding/decoding without gradients

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}; expected one of {PREDICTION_TYPES}")
        if len(self.prompt_embeddings) < 2:
            raise ValueError("prompt_embeddings needs at least one class and the empty prompt")

    # --- the DiffusionBundle interface ---------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return len(self.prompt_embeddings) - 1

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's compute dtype."""
        return next(self.unet.parameters()).dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def to(self, device: str | torch.device) -> "LatentDiffusionBundle":
        self.unet.to(device)
        self.vae.to(device)
        self.prompt_embeddings = self.prompt_embeddings.to(device)
        return self

    def eps(self, x_t: torch.Tensor, t: int, labels: torch.Tensor) -> torch.Tensor:
        """Predicted noise (float32) at integer timestep ``t`` for prompt ids ``labels`` (null = "")."""
        dev = x_t.device
        timesteps = torch.full((len(x_t),), t, device=dev, dtype=torch.long)
        cond = self.prompt_embeddings[labels.to(self.prompt_embeddings.device)].to(dev, self.dtype)
        out = self.unet(x_t.to(self.dtype), timesteps, encoder_hidden_states=cond).sample.float()
        if self.prediction_type == "epsilon":
            return out
        a = self.alpha(t)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) x0
            return math.sqrt(a) * out + math.sqrt(1 - a) * x_t.float()
        return (x_t.float() - math.sqrt(a) * out) / math.sqrt(1 - a)  # "sample": out is x0

    # --- pixels <-> latents -----------------------------------------------------------------------

    @torch.no_grad()
    def to_model(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float32 latents (N, C, S/f, S/f) at the model's resolution S.

        Deterministic: the VAE posterior's mean, ``(mean - shift) * scaling_factor``.
        """
        dev = next(self.vae.parameters()).device
        x = pixels_to_model(images)
        out = []
        for i in range(0, len(x), self.vae_batch_size):
            chunk = resize(x[i : i + self.vae_batch_size].to(dev), self.image_size)
            mean = self.vae.encode(chunk.to(self.vae_dtype)).latent_dist.mean.float()
            out.append((mean - self.shift_factor) * self.scaling_factor)
        if not out:
            return torch.zeros(0, self.unet.config.in_channels, *self.latent_shape, device=dev)
        return torch.cat(out)

    @property
    def latent_shape(self) -> tuple[int, int]:
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.image_size // f, self.image_size // f)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> float32 images in [-1, 1] (N, 3, S, S); differentiable (no chunking)."""
        z = latents / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae_dtype)).sample.float()

    @torch.no_grad()
    def to_pixels(self, latents: torch.Tensor, size: Sequence[int] | None = None) -> np.ndarray:
        """Latents -> uint8 (N, H, W, 3), resized to ``size`` (H, W) when given (else S x S)."""
        out = []
        for i in range(0, len(latents), self.vae_batch_size):
            x = self.decode(latents[i : i + self.vae_batch_size])
            out.append(model_to_pixels(resize(x.clamp(-1, 1), size) if size is not None else x))
        h, w = tuple(size) if size is not None else (self.image_size, self.image_size)
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)


# --- loading ----------------------------------------------------------------------------------


def clip_text_encoder(
    path_or_repo: str | Path,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    variant: str | None = None,
    cache_dir: str | Path | None = None,
) -> TextEncoder:
    """The checkpoint's own ``CLIPTextModel`` + ``CLIPTokenizer`` as a :data:`TextEncoder`.

    Pads to the tokenizer's ``model_max_length`` (77 for SD) and returns the last hidden
    state, as the Stable Diffusion pipelines do.  Needs ``transformers``.
    """
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as err:  # not a dependency of the project
        raise ImportError(
            "encoding the class prompts with the checkpoint's CLIPTextModel needs the 'transformers' package, "
            "which is not installed; install it or pass text_encoder=<callable: list[str] -> (N, L, D) tensor>"
        ) from err
    src = str(path_or_repo)
    hub = {"local_files_only": local_files_only, "cache_dir": cache_dir}
    tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **hub)
    model = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", use_safetensors=True, variant=variant, **hub)
    model = model.float().to(device).eval().requires_grad_(False)
    use_mask = bool(getattr(model.config, "use_attention_mask", False))

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        tok = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        mask = tok.attention_mask.to(device) if use_mask else None
        return model(tok.input_ids.to(device), attention_mask=mask)[0]

    return encode


def load_latent_diffusion(
    path_or_repo: str | Path,
    class_names: Sequence[str],
    template: str,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    text_encoder: TextEncoder | None = None,
    allow_hub: bool = False,
    cache_dir: str | Path | None = None,
    variant: str | None = None,
    text_batch_size: int = 64,
    vae_batch_size: int = 8,
) -> LatentDiffusionBundle:
    """Load a diffusers latent diffusion checkpoint (folder layout or hub repo id).

    ``dtype`` is the UNet/VAE compute dtype (``"float32" | "bfloat16" | "float16"``; None:
    bf16 on CUDA, float32 elsewhere).  An fp16 VAE whose config asks for ``force_upcast``
    (SD's does) stays in float32, as in the diffusers pipelines: it overflows in fp16.
    ``image_size`` defaults to the UNet's ``sample_size`` times the VAE's downsampling factor
    (512 for SD 1.x).  ``text_encoder`` defaults to the checkpoint's ``CLIPTextModel``
    (needs ``transformers``); it is only used here, to fill the prompt table, and is not kept.
    Weights are read as safetensors only; a hub repo id resolves in ``cache_dir`` (None: the
    Hugging Face default cache) and is downloaded only when ``allow_hub``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from dicap.runtime import device as default_device

    dev = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, dev)
    src = str(path_or_repo)
    if Path(src).exists():
        missing = [d for d in SUBFOLDERS if not (Path(src) / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"no diffusers latent diffusion checkpoint at {src} (missing {', '.join(missing)}/)")
    elif src.count("/") != 1 or src.startswith((".", "/", "~")):  # not a hub repo id either
        raise FileNotFoundError(f"no latent diffusion checkpoint at {src}")
    hub = {"local_files_only": not allow_hub, "cache_dir": str(cache_dir) if cache_dir is not None else None}
    kw = {**hub, "use_safetensors": True, "variant": variant}
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=torch_dtype, **kw)
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise ValueError(
            f"UNet with addition_embed_type={unet.config.addition_embed_type!r} (e.g. SDXL) needs extra conditioning; "
            "only SD-style UNets conditioned on text embeddings alone are supported"
        )
    vae_config = AutoencoderKL.load_config(src, subfolder="vae", **hub)
    upcast = torch_dtype == torch.float16 and vae_config.get("force_upcast", True)  # AutoencoderKL's default
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=torch.float32 if upcast else torch_dtype, **kw)
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(f"UNet in_channels {unet.config.in_channels} != VAE latent_channels {vae.config.latent_channels}")
    sched = DDIMScheduler.from_pretrained(src, subfolder="scheduler", clip_sample=False, **hub)
    if image_size is None:
        image_size = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
    encode = text_encoder or clip_text_encoder(src, dev, variant=variant, **hub)
    table = embed_prompts(encode, prompts_for(class_names, template), text_batch_size)
    if table.ndim != 3 or table.shape[-1] != unet.config.cross_attention_dim:
        raise ValueError(
            f"prompt embeddings of shape {tuple(table.shape)} do not fit the UNet "
            f"(expected (N, L, {unet.config.cross_attention_dim}))"
        )
    unet.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    bundle = LatentDiffusionBundle(
        unet=unet,
        vae=vae,
        alphas_cumprod=sched.alphas_cumprod.clone().float(),
        prompt_embeddings=table.to(torch_dtype),
        image_size=int(image_size),
        prediction_type=sched.config.prediction_type,
        vae_batch_size=vae_batch_size,
    )
    return bundle.to(dev)


def compile_unet(bundle: LatentDiffusionBundle, device: torch.device, backend: str = "inductor", force: bool = False) -> bool:
    """``torch.compile`` the UNet's forward in place on CUDA; a no-op elsewhere (returns whether applied).

    Measured on an H200 (benchmarks/paper_gpu_hours.py --compile): SD 1.5's UNet in bf16 at batch 32 ran 45% faster compiled
    (default mode), after 64 s of compilation - worth it over a shard's thousands of calls, not
    on a CPU, where jobs are small and inductor's C++ build would dominate.  The forward, not
    the module, is compiled, so forward hooks (the benchmark's UNet meter) stay outside the
    graph.  Shapes are left dynamic-on-recompile (torch's default): a shard sees a few batch
    sizes (the batch, twice it under classifier-free guidance, the round-trip sample, the last
    batch).  Attention needs nothing here: diffusers' default processor already calls
    PyTorch's fused ``scaled_dot_product_attention``.  ``force`` (tests) compiles on any device.
    """
    if device.type != "cuda" and not force:
        return False
    bundle.unet.forward = torch.compile(bundle.unet.forward, backend=backend)
    return True


def write_pretrained_pointer(spec: dict, out_dir: str | Path) -> None:
    """Check that the checkpoint ``spec`` names is available offline, then record it in ``out_dir``."""
    from dicap.io import write_json

    src = spec["path"]
    if Path(src).exists():
        missing = [d for d in SUBFOLDERS if not (Path(src) / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"no diffusers latent diffusion checkpoint at {src} (missing {', '.join(missing)}/)")
    else:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(src, cache_dir=spec.get("cache_dir"), local_files_only=True)
        except Exception as err:  # huggingface_hub raises several error types for "not cached"
            raise FileNotFoundError(
                f"diffusion checkpoint {src!r} is not in the cache {spec.get('cache_dir') or '(default)'} ({type(err).__name__}); "
                f"on a machine with internet run: hf download {src}"
                + (f" --cache-dir {spec['cache_dir']}" if spec.get("cache_dir") else "")
            ) from None
    write_json(Path(out_dir) / PRETRAINED_FILE, spec)


def load_from_dir(model_dir: str | Path, class_names: Sequence[str], device: torch.device,
                  template: str | None = None, compile: bool = True) -> LatentDiffusionBundle | None:
    """The latent model ``model_dir/pretrained.json`` names, or None for a model trained here.

    ``template`` replaces the configured one: captions are whole prompts (``"{}"``).  ``compile``
    False keeps the UNet eager even where the spec compiles it (a job too small to repay compilation).

    ``dtype`` and ``compile`` apply on CUDA only: a CPU run stays float32, where bf16 moves
    pixels, and eager, where compiling costs more than it saves.
    """
    from dicap.io import read_json

    pointer = Path(model_dir) / PRETRAINED_FILE
    if not pointer.exists():
        return None
    spec = read_json(pointer)
    bundle = load_latent_diffusion(
        spec["path"], class_names, spec["template"] if template is None else template,
        dtype=spec.get("dtype") if device.type == "cuda" else "float32",
        device=device, image_size=spec.get("image_size"), cache_dir=spec.get("cache_dir"),
    )
    if spec.get("compile", False) and compile:
        compile_unet(bundle, device)
    return bundle
