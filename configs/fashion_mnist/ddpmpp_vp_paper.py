"""Fashion-MNIST, DDPM++ cont. (VP) at the paper's width for a GPU: nf = 128, four residual blocks
per resolution, the paper's optimizer (5000 warm-up steps) and EMA (0.9999, no warm-up), batch
128; ``ddpmpp_vp.py`` is the same network narrowed for a CPU."""

from configs.fashion_mnist import ddpmpp_vp


def get_config():
  config = ddpmpp_vp.get_config()
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
