"""Auditing generated counterfactuals with an oracle independent of the generator's guide."""
