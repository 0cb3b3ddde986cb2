"""The rendering layer: tables shown from records, findings, markdown and HTML reports (run, html), plots,
comparisons of stored runs, and the figures the docs quote (docs)."""
