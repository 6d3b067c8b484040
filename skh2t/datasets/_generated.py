"""What the generators of structured tasks share: argument checks and the returned Bunch."""

from collections.abc import Sequence
from numbers import Integral

import numpy as np
from sklearn.utils import Bunch


def check_arguments(
    n_samples: object, task: object, image_size: object, tasks: Sequence[str], min_size: int
) -> tuple[int, int]:
    """``(n_samples, image_size)`` as ints, after checking them and ``task``."""
    n_samples = _check_int(n_samples, "n_samples", 1)
    image_size = _check_int(image_size, "image_size", min_size)
    if task not in tasks:
        raise ValueError(f"task must be one of {tuple(tasks)}, got {task!r}.")
    return n_samples, image_size


def _check_int(value: object, name: str, minimum: int) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def generated_data(
    images: np.ndarray,
    target: np.ndarray,
    *,
    target_names: list[str],
    factors: object,
    task: str,
    descr: str,
    return_X_y: bool,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    if return_X_y:
        return images, target
    return Bunch(
        images=images,
        target=target,
        target_names=np.array(target_names),
        factors=factors,
        task=task,
        DESCR=descr,
    )
