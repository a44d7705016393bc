"""The `corral` command line: one thin module per command."""
