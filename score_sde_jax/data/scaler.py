"""Data scaler and inverse scaler, as in the paper's ``datasets.py``.

Data loaders yield values in ``[0, 1]`` (images) or in their natural range
(toy data). With ``centered=True`` the model sees ``2 x - 1`` in ``[-1, 1]``.
"""


def get_data_scaler(centered: bool):
  """Maps loader output to model space: ``x -> 2x - 1`` if ``centered`` else identity."""
  if centered:
    return lambda x: x * 2.0 - 1.0
  return lambda x: x


def get_data_inverse_scaler(centered: bool):
  """Inverse of :func:`get_data_scaler`."""
  if centered:
    return lambda x: (x + 1.0) / 2.0
  return lambda x: x
