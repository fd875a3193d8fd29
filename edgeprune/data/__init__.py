"""Datasets: a registry, local and hub loaders, splits held in memory as tensors."""
