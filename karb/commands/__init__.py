"""One module per CLI subcommand (see ``karb.cli``)."""
