"""The errors of reading a config into an experiment."""


class ConfigError(ValueError):
  """A config field has a value that is not allowed (raised by :mod:`score_sde_jax.build`)."""


class PartMissing(ConfigError):
  """A part of an experiment that its config (a converted or partial one) does not describe."""
