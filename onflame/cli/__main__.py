"""``python -m onflame.cli``: the ``onflame`` executable."""
from .runner import run

run()
