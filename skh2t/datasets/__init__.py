"""Data sets for transfer learning experiments.

- :func:`load_fashion_mnist` -- Fashion-MNIST, found offline (data home,
  Debian's ``dataset-fashion-mnist``) or downloaded.
- :func:`stratified_subsample` -- a class-balanced, seeded subset of a data
  set, e.g. the 1000 training images of the VTAB-1k protocol.
- :func:`get_data_home` -- where data sets are looked for and downloaded.
"""

from ._fashion_mnist import load_fashion_mnist
from ._home import get_data_home
from ._subsample import stratified_subsample

__all__ = [
    "get_data_home",
    "load_fashion_mnist",
    "stratified_subsample",
]
