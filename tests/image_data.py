"""Random labelled images shared by the feature tests."""

import numpy as np


def images_and_labels(n_images, seed=0, size=32):
    """Random uint8 images; class 1 has a darker top half."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % 2
    images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    images[labels == 1, : size // 2] //= 3
    return images, labels
