"""The ``envyard`` commands, one module per command or command group; ``envyard.cli`` registers them.

A command module imports ``envyard.cli.context``, ``envyard.cli.output``, ``envyard.cli.follow`` and the packages
below the CLI (``envyard.api``, ``envyard.worker``, ``envyard.registry``, ``envyard.builder``), never another
command module (tests/cli/test_structure.py checks it).
"""

__all__: list[str] = []
