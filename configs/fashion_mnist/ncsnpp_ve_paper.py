"""Fashion-MNIST, NCSN++ cont. (VE) at the paper's width for a GPU: nf = 128, four residual blocks
per resolution, the paper's optimizer and EMA, batch 128; ``ncsnpp_ve.py`` is the same network
narrowed for a CPU."""

from configs.fashion_mnist import ncsnpp_ve


def get_config():
  config = ncsnpp_ve.get_config()
  config.model.nf = 128
  config.model.num_res_blocks = 4
  config.model.ema_rate = 0.9999
  config.model.ema_warmup = False
  config.optim.warmup = 5000
  t = config.training
  t.batch_size, t.n_iters = 128, 200000
  t.log_freq, t.eval_freq, t.snapshot_freq, t.snapshot_freq_for_preemption = 100, 5000, 20000, 5000
  t.snapshot_sampling = True
  config.eval.batch_size = 500
  config.eval.num_samples = 10000
  config.eval.num_eval_examples = 10000
  return config
