"""The command line: `python -m bench COMMAND`. The parser reads the option schema (bench.config.options)
and dispatches to the stages below it."""
