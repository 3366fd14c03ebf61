"""One row of the benchmark table, and the Markdown it prints as."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """A measured figure, what it is compared with, and the goal it serves."""

    area: str
    what: str
    figure: float
    unit: str
    against: str = ""
    goal: str = ""
    met: bool | None = None

    def markdown(self) -> str:
        verdict = {True: "yes", False: "**no**", None: ""}[self.met]
        cells = [
            self.area,
            self.what,
            f"{format_figure(self.figure)} {self.unit}",
            self.against,
            self.goal,
            verdict,
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| area | measurement | figure | against | goal | met |\n"
    "|---|---|---:|---|---|:---:|"
)


def format_figure(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(rows: list[Row]) -> str:
    return "\n".join([HEADER, *(row.markdown() for row in rows)])
