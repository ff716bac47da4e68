"""``python -m modelkeep`` is the ``modelkeep`` command."""
from .cli.main import run

run()
