"""Data: toy distributions (the Gaussian mixture with exact marginals under every SDE), image
data sets held as integer levels, and the scalers between data and model space."""

from score_sde_jax.data.errors import DataError
from score_sde_jax.data.images import ImageArrays
from score_sde_jax.data.mixture import GaussianMixture
from score_sde_jax.data.scaler import get_data_inverse_scaler, get_data_scaler
from score_sde_jax.data.toy import (Checkerboard, ConcentricRings, SwissRoll, ToyDistribution,
                                    TwoMoons)

__all__ = [
    "Checkerboard", "ConcentricRings", "DataError", "GaussianMixture", "ImageArrays", "SwissRoll",
    "ToyDistribution", "TwoMoons", "get_data_inverse_scaler", "get_data_scaler",
]
