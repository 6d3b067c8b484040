"""Data sets for transfer learning experiments.

- :func:`load_fashion_mnist` -- Fashion-MNIST, found offline (data home,
  Debian's ``dataset-fashion-mnist``) or downloaded.
- :func:`load_image_folder` -- your own images, one sub-folder per class;
  :func:`read_images` decodes (a subset of) them.
- :func:`make_sprites`, :func:`make_scenes` -- generated structured tasks
  after VTAB's dSprites (location, orientation) and CLEVR (count, distance),
  with labels that can be read from the pixels.
- :func:`stratified_subsample` -- a class-balanced, seeded subset of a data
  set, e.g. the 1000 training images of the VTAB-1k protocol.
- :func:`get_data_home` -- where data sets are looked for and downloaded.
"""

from ._fashion_mnist import load_fashion_mnist
from ._home import get_data_home
from ._image_folder import IMG_EXTENSIONS, load_image_folder
from ._images import read_images
from ._scenes import SceneFactors, make_scenes
from ._sprites import SpriteFactors, make_sprites
from ._subsample import stratified_subsample

__all__ = [
    "IMG_EXTENSIONS",
    "SceneFactors",
    "SpriteFactors",
    "get_data_home",
    "load_fashion_mnist",
    "load_image_folder",
    "make_scenes",
    "make_sprites",
    "read_images",
    "stratified_subsample",
]
