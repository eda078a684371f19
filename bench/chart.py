"""
The charts: PostgreSQL select-only throughput by client count, direct
against PgBouncer against hoopgate, one panel per TLS setting and query
protocol; SSH transfer rates, direct against ProxyJump against hoopgate,
per direction.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.report import BYTES_PER_MIB, CONTENDERS, LABELS, SSH_CONTENDERS, Results

__all__ = ["write_postgres_chart", "write_ssh_chart"]

_STYLE = {
    "direct": {"color": "#4c72b0", "marker": "o"},
    "pgbouncer": {"color": "#55a868", "marker": "s"},
    "hoopgate": {"color": "#c44e52", "marker": "^"},
}

_SSH_COLOURS = {
    "direct": "#4c72b0",
    "proxyjump": "#8172b2",
    "hoopgate": "#c44e52",
    "direct-ctr": "#a1b8dc",
    "proxyjump-ctr": "#c3bbe0",
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


def write_ssh_chart(results: Results, path: Path) -> bool:
    """
    Draw the SSH transfer rates to C{path} (PNG): per direction, one bar
    per contender (median MiB/s).

    Returns:
        False when there was nothing to draw.
    """
    rows = [row for row in results.ssh if any(row.runs.values())]
    if not rows:
        return False
    figure, axis = plt.subplots(figsize=(7.6, 4.8))
    width = 0.8 / len(SSH_CONTENDERS)
    for index, contender in enumerate(SSH_CONTENDERS):
        rates = [row.mib_per_s(contender) or 0.0 for row in rows]
        offset = (index - (len(SSH_CONTENDERS) - 1) / 2) * width
        xs = [i + offset for i in range(len(rows))]
        bars = axis.bar(
            xs,
            rates,
            width,
            label=LABELS.get(contender, contender),
            color=_SSH_COLOURS[contender],
        )
        axis.bar_label(bars, fmt="%.0f", fontsize=8)
    axis.set_xticks(
        range(len(rows)),
        [f"{row.direction} {row.size // BYTES_PER_MIB} MiB" for row in rows],
    )
    axis.set_ylabel("MiB/s (median, login included)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3, axis="y")
    # Below the axes, so no bar hides behind it.
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    machine = results.meta.get("cpu", "")
    axis.set_title(
        f"SSH exec transfers: direct, ProxyJump, hoopgate — {machine}", size=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
