"""skh2t: Head2Toe transfer learning from pretrained vision backbones, for scikit-learn."""

from skh2t.group_lasso import GroupLassoClassifier

__version__ = "0.1.0.dev0"

__all__ = ["GroupLassoClassifier", "__version__"]
