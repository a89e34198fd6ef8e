"""Built-in subcommands. Each module is thin: parse, validate, call the library, render."""
