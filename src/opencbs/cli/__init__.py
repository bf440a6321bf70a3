"""The ``opencbs`` command line: thin commands that parse, call ``opencbs.store`` functions in a
transaction, and print (data to stdout, logs and errors to stderr)."""
