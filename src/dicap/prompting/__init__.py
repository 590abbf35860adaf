"""Estimation: CoOp-style learnable context for a frozen CLIP, with DiCap's counterfactual loss."""
