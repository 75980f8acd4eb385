"""One module per command group; cli.py only parses arguments and dispatches here."""
