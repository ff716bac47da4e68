"""The command-line interface: one thin module per sub-command over the public API."""
