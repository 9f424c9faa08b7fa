"""Implementations of the `gridkey` subcommands (the parser is in ``gridkey.cli``)."""
