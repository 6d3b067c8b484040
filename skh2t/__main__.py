"""``python -m skh2t``: the ``skh2t`` command line."""

import sys

from skh2t.cli import main

if __name__ == "__main__":
    sys.exit(main())
