"""Figures: labelled image grids are large enough to see and refuse labels that do not fit."""

import os

import matplotlib.image
import numpy as np
import pytest

from score_sde_jax import viz


def _width(path):
  return matplotlib.image.imread(path).shape[1]


def test_small_images_are_drawn_at_min_pixels_and_labels_widen_the_figure(tmp_path):
  """8x8 images, 8 per row: at ``min_pixels=48`` each is 48 screen pixels (``dpi 110`` / 100 of
  them per inch), so the grid alone is wider than 8 * 48 px; row labels add a margin on the
  left (the tight bounding box keeps only what is drawn, so without labels it has none)."""
  images = np.random.default_rng(0).random((16, 8, 8, 1))
  plain = viz.plot_image_grid(images, str(tmp_path / "plain.png"), nrow=8)
  labelled = viz.plot_image_grid(images, str(tmp_path / "labelled.png"), nrow=8,
                                 row_labels=["class 0", "class 1"],
                                 col_labels=[f"a={a}" for a in range(8)])
  assert _width(plain) >= 8 * 48
  assert _width(labelled) >= _width(plain) + 20


def test_columns_are_as_wide_as_their_labels(tmp_path):
  """Column labels longer than an image is wide widen the columns (size-7 text, up to 8 screen
  pixels per character) instead of running into each other (the inpainting figure's
  "sample 1sample 2" on 8x8 digits)."""
  images = np.zeros((12, 8, 8, 1))
  short = viz.plot_image_grid(images, str(tmp_path / "short.png"), nrow=6,
                              col_labels=list("abcdef"))
  long = viz.plot_image_grid(images, str(tmp_path / "long.png"), nrow=6,
                             col_labels=[f"sample {j}" for j in range(6)])
  # 6 columns of 8 characters at 7 pixels or more (before: 330 pixels, labels overlapping)
  assert _width(short) < 6 * 8 * 7 <= _width(long)


@pytest.mark.parametrize("field,labels", [("row_labels", ["a"] * 3), ("col_labels", ["a"] * 5)])
def test_labels_that_do_not_fit_the_grid_are_refused(tmp_path, field, labels):
  with pytest.raises(ValueError, match=f"{field}: {len(labels)} labels for a grid of 2 rows x 8 "
                                       f"columns; give {2 if field == 'row_labels' else 8}"):
    viz.plot_image_grid(np.zeros((16, 8, 8, 1)), str(tmp_path / "x.png"), nrow=8,
                        **{field: labels})


def test_long_learned_arrows_are_drawn_capped_and_counted(tmp_path):
  """Arrows above the cap keep their direction and get the cap's length; the others are as
  given. The figure says how many were capped."""
  v = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, -10.0]])
  drawn, capped = viz.capped_arrows(v, 2.5)
  np.testing.assert_allclose(drawn, [[1.5, 2.0], [0.3, 0.4], [0.0, -2.5]], rtol=1e-12)
  assert capped.tolist() == [True, False, True]
  grid = np.stack(np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
  exact = -grid[None]
  learned = exact.copy()
  learned[0, 5] = [100.0, 0.0]   # one wild value at t = times[0]
  fig_path = viz.plot_score_fields(grid, [0.1], learned, exact, str(tmp_path / "f.png"))
  assert os.path.getsize(fig_path) > 1000


def test_quality_curves_join_their_points_in_nfe_order(monkeypatch, tmp_path):
  """Rows measured in any order (20, 10, 50 NFE, as a benchmark appends them) draw one line
  from the fewest evaluations to the most, each value staying with its NFE."""
  figures = []
  monkeypatch.setattr(viz, "_save", lambda fig, path: figures.append(fig) or path)
  viz.plot_quality_vs_nfe({"data": {"solver": ([20, 10, 50], [80.2, 69.0, 81.5])}},
                          str(tmp_path / "q.png"), references={"data": {"pc": (1000, 58.8)}})
  line = figures[0].axes[0].lines[0]
  np.testing.assert_array_equal(line.get_xdata(), [10, 20, 50])
  np.testing.assert_array_equal(line.get_ydata(), [69.0, 80.2, 81.5])
