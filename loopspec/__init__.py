"""Framework-neutral spec shared by flaxloop and torchloop.

Imports neither jax nor torch: the config schema, datasets as NumPy arrays, the seeded
batch order, parity-mode dropout masks, the canonical (torch state_dict) weight layout
with safetensors I/O, early stopping and the metrics format.
"""
