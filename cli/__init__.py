"""ebgen.cli — the `ebgen` command-line interface (one module per command)."""
