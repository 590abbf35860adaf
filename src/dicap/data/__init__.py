"""Datasets: the embedded structural causal model, dataset stores and few-shot splits."""
