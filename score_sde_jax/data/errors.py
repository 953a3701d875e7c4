"""The data layer's one error type."""


class DataError(ValueError):
  """A data file is missing, unreadable or of the wrong shape."""
