"""``python -m pyro_dirmag``: the ``pyro-dirmag`` command line."""

import sys

from pyro_dirmag.cli import main

if __name__ == "__main__":
    sys.exit(main())
