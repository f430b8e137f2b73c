"""Segmentation: k-prototypes, k selection, bootstrap stability, stable ids and names."""
