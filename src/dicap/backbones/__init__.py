"""Frozen backbones: CLIP (open_clip) and the diffusion model (diffusers), plus the guides."""
