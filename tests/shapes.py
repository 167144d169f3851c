"""Does a set of images look like the synthetic shapes (one disc or square on a gradient)?

A cheap, honest stand-in for "recognisable shapes in varied colours" (docs/results.md, "The
quickstart"), used by tests/test_quickstart.py. Each image's background is fitted as a plane per
channel (the data's gradients are exactly that), fitted again without the pixels that stand out;
the pixels still standing out are the shape. An image holds a shape when they form one compact
region of 2-40% of the image. Reported for a set of images:

- `found`: the fraction of images that hold a shape (the data: 0.87, since a shape of a third of
  the image tilts the fitted plane; grainy blobs, or backgrounds alone, score low);
- `colour`: the spread of the shapes' mean colours, each channel's standard deviation across
  images, averaged (one hue for every z scores low).

`python tests/shapes.py RUN ...` scores run folders (or checkpoints) as the full_run test does:
`scores` of 256 samples of the generator against the data at its resolution. On saved sample grids,
`python tests/shapes.py [--resolution R] GRID.png ...` prints found and colour as fractions of
the data's (R: the images' side, 32 unless given).
"""

import numpy as np
import torch
from scipy import ndimage

from sngan.data.datasets import synthetic_shapes
from sngan.models.sample import GRID_PADDING
from sngan.training.health import spread

STAND_OUT = 0.25  # summed |pixel - background| over RGB in [0, 1]; the data's shapes: >= 0.3 mostly


def _residual(image: np.ndarray) -> np.ndarray:
    """|image - its background plane|, summed over channels: (H, W) from (H, W, 3) in [0, 1]."""
    h, w, _ = image.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    basis = np.stack([np.ones(h * w), xx.ravel(), yy.ravel()], 1)
    pixels = image.reshape(-1, 3)
    keep = np.ones(h * w, bool)
    for _ in range(3):  # refit on the pixels that fit best, so that the shape does not tilt the plane
        coef, *_ = np.linalg.lstsq(basis[keep], pixels[keep], rcond=None)
        residual = np.abs(pixels - basis @ coef).sum(1)
        keep = residual <= np.quantile(residual, 0.6)
    return residual.reshape(h, w)


def shape_stats(images: torch.Tensor) -> dict[str, float]:
    """`found` and `colour` (module docstring) of images `(N, 3, H, W)` in [-1, 1]."""
    pixels = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    colours = []
    for image in pixels:
        mask = _residual(image) > STAND_OUT
        labels, count = ndimage.label(mask)
        if count == 0:
            continue
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        shape = labels == 1 + sizes.argmax()
        if 0.02 <= shape.mean() <= 0.4 and sizes.max() >= 0.8 * mask.sum():
            colours.append(image[shape].mean(0))
    colour = float(np.std(colours, 0).mean()) if len(colours) > 1 else 0.0
    return {"found": len(colours) / len(pixels), "colour": colour}


def reference_images(n: int = 256, resolution: int = 32) -> torch.Tensor:
    """`n` images of the synthetic shapes in [-1, 1], the reference that scores are relative to
    (seed 1: not the training images)."""
    return synthetic_shapes(n, resolution, seed=1).float() / 127.5 - 1


def data_stats(n: int = 256, resolution: int = 32) -> dict[str, float]:
    """shape_stats of the reference images."""
    return shape_stats(reference_images(n, resolution))


def colour_spread(images: torch.Tensor) -> float:
    """How much the images' mean colours vary: the std across images of each channel's mean."""
    return float(images.mean((2, 3)).std(0).mean())


def scores(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """What the full_run test checks, as fractions of the data's: `spread` (per-pixel std across
    samples), `image colour` (colour_spread), and shape_stats' `found` and `colour`."""
    shapes, data = shape_stats(fake), shape_stats(real)
    return {"spread": spread(fake) / spread(real), "image colour": colour_spread(fake) / colour_spread(real),
            "found": shapes["found"] / data["found"], "colour": shapes["colour"] / data["colour"]}


def _grid_images(path: str, resolution: int = 32, pad: int = GRID_PADDING) -> torch.Tensor:
    """The images of a sample grid as saved by sngan (`pad` pixels around each), in [-1, 1]."""
    from PIL import Image
    grid = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    step = resolution + pad
    rows, cols = (grid.shape[1] - pad) // step, (grid.shape[2] - pad) // step
    tiles = [grid[:, pad + r * step:pad + r * step + resolution, pad + c * step:pad + c * step + resolution]
             for r in range(rows) for c in range(cols)]
    return torch.stack(tiles).float() / 127.5 - 1


if __name__ == "__main__":
    import argparse

    import sngan

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="run folders, checkpoints, or sample grids (.png)")
    p.add_argument("--resolution", type=int, default=32, help="the side of the images in a grid")
    args = p.parse_args()
    # The data's statistics at the grids' resolution, once for all grids.
    reference = data_stats(resolution=args.resolution) if any(path.endswith(".png") for path in args.paths) else {}
    for path in args.paths:
        if path.endswith(".png"):
            stats = shape_stats(_grid_images(path, args.resolution))
            print(f"{path}: " + "  ".join(f"{k} {v / reference[k]:.2f}" for k, v in stats.items()))
        else:
            G = sngan.load(path, device="cpu")
            result = scores(G.sample(256, seed=0), reference_images(256, G.resolution))
            print(f"{path}: " + "  ".join(f"{k} {v:.2f}" for k, v in result.items()))
