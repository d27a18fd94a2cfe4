"""Experiments: the same topics through several variants, as one batch, and their grid."""
