"""``python -m mtlzoo.presets README.md``: refresh the README's table of shipped presets."""

import sys

from mtlzoo.presets.store import sync_readme

print("updated" if sync_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md") else "up to date")
