"""``python -m onflame.cli``: the ``onflame`` executable."""
from . import run

run()
