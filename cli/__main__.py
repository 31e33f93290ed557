"""``python -m envyard.cli``: the ``envyard`` command."""

from envyard.cli import main

main()
