"""Where skh2t keeps downloaded data sets."""

import os

DATA_HOME_ENV = "SKH2T_DATA"


def get_data_home(data_home: str | os.PathLike[str] | None = None) -> str:
    """Return the path of the skh2t data directory.

    Like :func:`sklearn.datasets.get_data_home`, but for skh2t: data sets
    are looked for and downloaded under this folder, each in its own
    sub-folder (e.g. ``fashion-mnist/``). The folder is, in order of
    precedence: ``data_home`` if given, the ``SKH2T_DATA`` environment
    variable if set, else ``~/skh2t_data``. A leading ``~`` is expanded.

    Unlike scikit-learn's function this one does not create the folder:
    it is created when something is downloaded into it.

    Parameters
    ----------
    data_home : str or path-like, default=None
        An explicit data directory.

    Returns
    -------
    data_home : str
        The path of the data directory.

    Examples
    --------
    >>> from skh2t.datasets import get_data_home
    >>> get_data_home("/data/skh2t")
    '/data/skh2t'
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or os.path.join("~", "skh2t_data")
    return os.path.expanduser(os.fspath(data_home))
