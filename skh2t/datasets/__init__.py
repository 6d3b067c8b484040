"""Data sets for transfer learning experiments.

- :func:`load_fashion_mnist` -- Fashion-MNIST, found offline (data home,
  Debian's ``dataset-fashion-mnist``) or downloaded.
- :func:`get_data_home` -- where data sets are looked for and downloaded.
"""

from ._fashion_mnist import load_fashion_mnist
from ._home import get_data_home

__all__ = [
    "get_data_home",
    "load_fashion_mnist",
]
