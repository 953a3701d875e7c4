"""Data: toy distributions with exact densities, scalers."""

from score_sde_jax.data.images import DataError, ImageArrays
from score_sde_jax.data.scaler import get_data_inverse_scaler, get_data_scaler
from score_sde_jax.data.toy import (Checkerboard, ConcentricRings, GaussianMixture, SwissRoll,
                                    ToyDistribution, TwoMoons)

__all__ = [
    "Checkerboard", "ConcentricRings", "DataError", "GaussianMixture", "ImageArrays", "SwissRoll",
    "ToyDistribution",
    "TwoMoons", "get_data_inverse_scaler", "get_data_scaler",
]
