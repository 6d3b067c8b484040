"""Parameter constraints shared by several estimators (their ``_parameter_constraints``)."""

from numbers import Integral

from sklearn.utils._param_validation import Interval

# joblib gives n_jobs=0 no meaning; refusing it here fails at set-up, not after extraction.
N_JOBS = [
    Interval(Integral, None, -1, closed="right"),
    Interval(Integral, 1, None, closed="left"),
    None,
]
