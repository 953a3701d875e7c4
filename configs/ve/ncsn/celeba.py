# Ported from yang-song/score_sde, configs/ve/ncsn/celeba.py.
# Copyright 2020 The Google Research Authors. Licensed under the Apache License, Version 2.0.
"""Config file for reproducing NCSNv1 on CelebA.

The paper's configs/ve/ncsn/celeba.py
(yang-song/score_sde), every field as the original sets it -- including
``training.loss = 'vesde'``, a field nothing reads; as the CelebA defaults set no
``training.sde``, this config also sets ``training.sde = 'vesde'``, which it evidently meant
(the original cannot build it)."""

from configs.default_celeba_configs import get_default_configs


def get_config():
  config = get_default_configs()
  # training
  training = config.training
  training.loss = 'vesde'   # sic: a field nothing reads, kept as the original
  training.sde = 'vesde'    # what it meant: the original's celeba defaults set no training.sde
  training.continuous = False
  # sampling
  sampling = config.sampling
  sampling.method = 'pc'
  sampling.predictor = 'none'
  sampling.corrector = 'ald'
  sampling.n_steps_each = 100
  sampling.snr = 0.316
  # model
  model = config.model
  model.name = 'ncsn'
  model.scale_by_sigma = False
  model.sigma_max = 1
  model.num_scales = 10
  model.ema_rate = 0.
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'
  model.nf = 128
  model.interpolation = 'bilinear'
  # optim
  optim = config.optim
  optim.weight_decay = 0
  optim.optimizer = 'Adam'
  optim.lr = 1e-3
  optim.beta1 = 0.9
  optim.amsgrad = False
  optim.eps = 1e-8
  optim.warmup = 0
  optim.grad_clip = -1.

  return config
