"""``python -m facelab.train.backbones``: parameter counts and MACs next to the published figures."""

from __future__ import annotations

import sys

from facelab.train.backbones import info_table

__all__: list[str] = []

if __name__ == "__main__":
    sys.stdout.write(info_table(sys.argv[1:] or None) + "\n")
