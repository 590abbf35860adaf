"""Abduction (DDIM inversion) and action (guided DDIM denoising): minimal counterfactuals."""
