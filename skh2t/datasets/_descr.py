"""Descriptions (``DESCR``) of the data sets."""

FASHION_MNIST = """\
.. _fashion_mnist_dataset:

Fashion-MNIST
-------------

**Data Set Characteristics:**

:Number of Instances: 70,000 (60,000 train + 10,000 test)
:Image size: 28 x 28 pixels, one grayscale channel (uint8, 0 = background)
:Number of Classes: 10, balanced (6,000 train and 1,000 test images each)
:Classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
    5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot
:Creator: Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf)
:License: MIT
:Source: https://github.com/zalandoresearch/fashion-mnist
:Date: 2017

Fashion-MNIST is a data set of article images from Zalando's catalogue,
meant as a drop-in replacement for MNIST with the same image size, format
and train/test split. The official files are the four gzip-compressed IDX
files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. On Debian and
Ubuntu they are packaged as ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``).

.. topic:: References

  - Han Xiao, Kashif Rasul and Roland Vollgraf. "Fashion-MNIST: a Novel
    Image Dataset for Benchmarking Machine Learning Algorithms".
    arXiv:1708.07747, 2017.
"""

IMAGE_FOLDER = """\
Image folder
------------

Images found under {root}, one class per sub-folder (the "ImageFolder"
convention). Class names are the sub-folder names sorted alphabetically;
the label of a class is its position in that order.

:Number of Instances: {n_samples}
:Number of Classes: {n_classes}
"""
