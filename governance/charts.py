"""Server-rendered SVG charts (no JavaScript, nothing downloaded): a stacked bar chart of
cost per period and group, and a budget burn-down line with its projection.

Every label is escaped; the markup is returned as safe HTML for templates. Colours come
from a fixed palette that stays readable in Pico's light and dark themes.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
)
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 40


def _usd(value: Decimal | float) -> str:
    value = float(value)
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.0001
    step = magnitude
    while step * 5 < value:
        step *= 2
    top = step
    while top < value:
        top += step
    return top


def stacked_bars(
    periods: list[date], series: list[tuple[str, list[Decimal]]], *, title: str
) -> SafeString:
    """A stacked bar per period, one colour per series (``[(name, values per period)]``),
    with a y axis in USD, period labels (thinned to fit) and a legend."""
    if not periods or not series:
        return mark_safe("")  # noqa: S308 - constant
    totals = [sum((values[i] for _, values in series), Decimal(0)) for i in range(len(periods))]
    top = _nice_max(float(max(totals)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(periods)
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 24 * ((len(series) + 3) // 4)}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_usd(value)}</text>'
        )
    every = max(1, round(len(periods) / 12))
    for p, period in enumerate(periods):
        x = LEFT + slot * p + (slot - bar) / 2
        y = TOP + plot_h
        for s, (name, values) in enumerate(series):
            value = float(values[p])
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(name)} · '
                f"{period.isoformat()}: {_usd(value)}</title></rect>"
            )
        if p % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                f"{period.strftime('%m-%d')}</text>"
            )
    for s, (name, _) in enumerate(series):
        x = LEFT + (s % 4) * 170
        y = HEIGHT + 4 + 24 * (s // 4)
        parts.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{x + 18}" y="{y + 11}">{escape(name[:24])}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label is escaped above


def burndown(
    points: list[tuple[datetime, Decimal]],
    *,
    begins: datetime,
    ends: datetime,
    limit_usd: Decimal,
    projected_usd: Decimal | None,
    now: datetime,
    title: str,
) -> SafeString:
    """Cumulative spend over the period (solid), its linear projection to the end (dashed)
    and the limit (a red line)."""
    length = (ends - begins).total_seconds()
    top = _nice_max(
        max(
            float(limit_usd),
            float(projected_usd or 0),
            *(float(v) for _, v in points or [(now, 0)]),
        )
    )
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(at: datetime, value: Decimal | float) -> str:
        x = LEFT + plot_w * max(0.0, min(1.0, (at - begins).total_seconds() / length))
        y = TOP + plot_h - plot_h * float(value) / top
        return f"{x:.1f},{y:.1f}"

    line = [xy(begins, 0)] + [xy(at, value) for at, value in points]
    spent = points[-1][1] if points else Decimal(0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_usd(value)}</text>'
        )
    limit_y = TOP + plot_h - plot_h * float(limit_usd) / top
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{limit_y:.1f}" y2="{limit_y:.1f}" '
        f'class="limit"><title>limit {_usd(limit_usd)}</title></line>'
    )
    parts.append(f'<polyline points="{" ".join(line)}" class="spent"/>')
    if projected_usd is not None:
        parts.append(
            f'<polyline points="{xy(min(now, ends), spent)} {xy(ends, projected_usd)}" '
            f'class="projection"><title>projected {_usd(projected_usd)}</title></polyline>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 12}">{begins.strftime("%Y-%m-%d %H:%M")}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 12}" text-anchor="end">'
        f"{ends.strftime('%Y-%m-%d %H:%M')}</text></svg>"
    )
    return mark_safe("".join(parts))  # noqa: S308 - labels are escaped or numeric
