"""Data sets for transfer learning experiments.

- :func:`load_fashion_mnist` -- Fashion-MNIST, found offline (data home,
  Debian's ``dataset-fashion-mnist``) or downloaded.
- :func:`load_image_folder` -- your own images, one sub-folder per class;
  :func:`read_images` decodes (a subset of) them.
- :func:`stratified_subsample` -- a class-balanced, seeded subset of a data
  set, e.g. the 1000 training images of the VTAB-1k protocol.
- :func:`get_data_home` -- where data sets are looked for and downloaded.
"""

from ._fashion_mnist import load_fashion_mnist
from ._home import get_data_home
from ._image_folder import IMG_EXTENSIONS, load_image_folder
from ._images import read_images
from ._subsample import stratified_subsample

__all__ = [
    "IMG_EXTENSIONS",
    "get_data_home",
    "load_fashion_mnist",
    "load_image_folder",
    "read_images",
    "stratified_subsample",
]
