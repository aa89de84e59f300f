"""``python -m facelab`` runs the command line."""

import sys

from facelab.cli import main

sys.exit(main())
