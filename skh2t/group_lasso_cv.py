"""Former home of :class:`~skh2t.GroupLassoClassifierCV`, now in :mod:`skh2t.linear_model`.

Kept so that imports and models pickled by earlier versions keep working.
"""

from skh2t.linear_model import GroupLassoClassifierCV

__all__ = ["GroupLassoClassifierCV"]
