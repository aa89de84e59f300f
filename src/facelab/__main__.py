"""``python -m facelab`` runs the command line."""

import sys

from facelab.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
