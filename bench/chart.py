"""
The PostgreSQL chart: select-only throughput by client count, direct
against PgBouncer against hoopgate, one panel per TLS setting and query
protocol.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.report import CONTENDERS, Results

__all__ = ["write_postgres_chart"]

_STYLE = {
    "direct": {"color": "#4c72b0", "marker": "o"},
    "pgbouncer": {"color": "#55a868", "marker": "s"},
    "hoopgate": {"color": "#c44e52", "marker": "^"},
}


def write_postgres_chart(results: Results, path: Path) -> bool:
    """
    Draw the select-only matrix to C{path} (PNG).

    Returns:
        False when there was nothing to draw.
    """
    modes = [
        m for m in ("simple", "prepared") if any(r.mode == m for r in results.select)
    ]
    settings = sorted({row.tls for row in results.select})
    if not modes:
        return False
    panels = [(tls, mode) for tls in settings for mode in modes]
    figure, axes = plt.subplots(
        len(settings),
        len(modes),
        figsize=(4.6 * len(modes), 3.6 * len(settings)),
        squeeze=False,
    )

    for axis, (tls, mode) in zip(axes.flat, panels, strict=True):
        rows = sorted(
            (r for r in results.select if (r.tls, r.mode) == (tls, mode)),
            key=lambda r: r.clients,
        )
        for contender in CONTENDERS:
            points = [
                (r.clients, r.median_of(contender, lambda run: run.tps)) for r in rows
            ]
            xs = [c for c, tps in points if tps is not None]
            ys = [tps for _, tps in points if tps is not None]
            axis.plot(xs, ys, label=contender, **_STYLE[contender])
        axis.set_xscale("log", base=2)
        axis.set_xticks([r.clients for r in rows], [str(r.clients) for r in rows])
        axis.set_ylim(bottom=0)
        axis.set_title(f"pgbench -S, {mode}, TLS {'on' if tls else 'off'}")
        axis.set_xlabel("clients")
        axis.set_ylabel("transactions/s (median)")
        axis.grid(alpha=0.3)
        axis.legend()

    machine = results.meta.get("cpu", "")
    figure.suptitle(f"PostgreSQL: direct, PgBouncer, hoopgate — {machine}", size=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
