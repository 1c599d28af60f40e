"""CLI subcommands, one module each (see :mod:`locbench.cli`)."""
