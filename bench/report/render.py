"""The one rendering layer: the Markdown table and the matplotlib set-up of every report (run, compare, the
command line's tables, profile, gradient flow, scaling, training, the TensorFlow studies and the overhead
benchmark). Each engine's colour and marker come from `style` (html.ENGINE_STYLE), the same in PNG and HTML."""

from __future__ import annotations

from tabulate import tabulate


def markdown_table(rows, headers, numbers: bool = False) -> str:
    """A GitHub Markdown table. Cells print as given, unless `numbers`: then tabulate reads numeric columns as
    numbers, aligns them and prints them its own way (the profile's and the TensorFlow studies' tables)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=not numbers)


def pyplot():
    """matplotlib.pyplot on the Agg backend: PNG files, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style(label: str) -> tuple[str, str]:
    """An engine's (colour, marker shape) on every plot and page."""
    from bench.report.html import style as engine_style

    return engine_style(label)
