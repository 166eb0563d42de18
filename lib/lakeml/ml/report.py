"""Self-contained HTML training reports: tables and matplotlib figures embedded as inline PNG.

Inputs are small, already aggregated pandas DataFrames or plain Python values (never Spark objects).
Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state)
and rendered with the Agg renderer; the HTML has no external CSS, JS or network references.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "HtmlReport",
    "plot_calibration",
    "plot_confusion",
    "plot_error_by_bucket",
    "plot_feature_importance",
    "plot_pr_roc",
    "plot_ranking_curves",
    "plot_rul_scatter",
]

MISSING = "–"
_DPI = 100
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.1em}p.subtitle{color:#666;margin-top:0}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{font-weight:600;margin-bottom:.3em}
p.empty{color:#888;font-style:italic}
""".strip()


def _esc(value: object) -> str:
    return _html.escape(str(value), quote=True)


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _format_cell(value: object) -> tuple[str, bool]:
    """Return (text, is_numeric) for one table cell, unescaped."""
    if _is_missing(value):
        return MISSING, False
    if isinstance(value, bool | np.bool_):
        return str(bool(value)), False
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return f"{int(number):,}", True  # counts logged as floats (e.g. rows) read as counts
        if 1e4 <= abs(number) < 1e15:
            return f"{number:,.0f}", True
        return f"{number:.4g}", True
    if isinstance(value, int | np.integer):
        return f"{int(value):,}", True
    return str(value), False


class HtmlReport:
    """An HTML document built section by section; figures are embedded as base64 PNG."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        """Start a report with a page title and an optional subtitle line."""
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []

    def add_heading(self, text: str) -> None:
        """Append a section heading."""
        self._parts.append(f"<h2>{_esc(text)}</h2>")

    def add_text(self, text: str) -> None:
        """Append a paragraph of plain (HTML-escaped) text."""
        self._parts.append(f"<p>{_esc(text)}</p>")

    def add_table(self, title: str, rows: Sequence[Mapping[str, object]]) -> None:
        """Append a table: columns are the union of keys in first-seen order, floats to 4 significant
        digits."""
        if not rows:
            self._parts.append(f"<h3>{_esc(title)}</h3>\n<p class='empty'>no rows</p>")
            return
        columns: list[str] = []
        seen: set[str] = set()
        for row in rows:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    columns.append(key)
        lines = [f"<table>\n<caption>{_esc(title)}</caption>"]
        lines.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead>")
        lines.append("<tbody>")
        for row in rows:
            cells = []
            for column in columns:
                text, numeric = _format_cell(row[column]) if column in row else ("", False)
                cls = " class='num'" if numeric else ""
                cells.append(f"<td{cls}>{_esc(text)}</td>")
            lines.append("<tr>" + "".join(cells) + "</tr>")
        lines.append("</tbody>\n</table>")
        self._parts.append("\n".join(lines))

    def add_figure(self, title: str, figure: Figure) -> None:
        """Render ``figure`` to PNG (dpi 100), embed it inline, then close and clear the figure."""
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
        finally:
            _close(figure)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        self._parts.append(
            f"<figure>\n<figcaption>{_esc(title)}</figcaption>\n"
            f'<img src="data:image/png;base64,{encoded}" alt="{_esc(title)}">\n</figure>'
        )

    def html(self) -> str:
        """Return the complete HTML document."""
        head = (
            "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{_esc(self.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{_esc(self.title)}</h1>\n"
        )
        if self.subtitle:
            head += f"<p class='subtitle'>{_esc(self.subtitle)}</p>\n"
        return head + "\n".join(self._parts) + "\n</body>\n</html>\n"

    def write(self, path: str | Path) -> Path:
        """Write the document as UTF-8 to ``path`` (creating parent directories) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.html(), encoding="utf-8")
        return target


def _close(figure: Figure) -> None:
    """Release a figure: drop it from pyplot's registry if pyplot is in use, then clear its artists."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
    figure.clear()


# ---------------------------------------------------------------------------------------------- plots


def _no_data(ax: Axes, title: str | None = None) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#888", fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def _is_empty(frame: pd.DataFrame | None) -> bool:
    return frame is None or len(frame) == 0


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; got {list(frame.columns)}")


def plot_pr_roc(
    curve: pd.DataFrame,
    threshold: float | None,
    positive_rate: float,
    confusion: Mapping[str, float] | None = None,
) -> Figure:
    """Precision-recall and ROC panels, with random baselines and the chosen threshold marked: at its
    exact operating point when its ``confusion`` counts (tp, fp, fn, tn) are given, else at the curve
    point of the nearest threshold."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_pr, ax_roc = fig.subplots(1, 2)
    if _is_empty(curve):
        _no_data(ax_pr, "Precision-recall")
        _no_data(ax_roc, "ROC")
        return fig
    _require(curve, ["threshold", "precision", "recall", "fpr"], "plot_pr_roc")
    data = curve[["threshold", "precision", "recall", "fpr"]].astype(float)

    pr = data.sort_values(["recall", "threshold"], ascending=[True, False])
    ax_pr.plot(pr["recall"], pr["precision"], color="C0", lw=1.8, label="model")
    ax_pr.axhline(positive_rate, color="grey", ls="--", lw=1, label=f"random ({positive_rate:.3g})")
    ax_pr.set(title="Precision-recall", xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))

    roc = data.sort_values(["fpr", "recall"])
    ax_roc.plot(roc["fpr"], roc["recall"], color="C1", lw=1.8, label="model")
    ax_roc.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
    ax_roc.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate (recall)")
    ax_roc.set(xlim=(0, 1.02), ylim=(0, 1.02))

    point = None if threshold is None else _operating_point(data, threshold, confusion)
    if point is not None:
        label = f"threshold {threshold:.4g}"  # the threshold used, not a neighbouring curve point's
        ax_pr.scatter([point["recall"]], [point["precision"]], s=60, color="C3", zorder=5, label=label)
        ax_roc.scatter([point["fpr"]], [point["recall"]], s=60, color="C3", zorder=5, label=label)
    for ax in (ax_pr, ax_roc):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    return fig


def _operating_point(
    data: pd.DataFrame, threshold: float, confusion: Mapping[str, float] | None
) -> Mapping[str, float] | None:
    """(precision, recall, fpr) at ``threshold``: from its confusion counts, else the nearest curve point."""
    if confusion is not None:
        tp, fp, fn, tn = (float(confusion[k]) for k in ("tp", "fp", "fn", "tn"))
        return {
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "fpr": fp / (fp + tn) if fp + tn else 0.0,
        }
    candidates = data.dropna(subset=["threshold"])
    if not len(candidates):
        return None
    nearest = candidates.loc[(candidates["threshold"] - threshold).abs().idxmin()]
    return {k: float(nearest[k]) for k in ("precision", "recall", "fpr")}


def plot_calibration(bins: pd.DataFrame) -> Figure:
    """Reliability diagram (observed vs mean predicted rate, with the diagonal) over a panel of bin counts."""
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax_rel, ax_cnt = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if _is_empty(bins):
        _no_data(ax_rel, "Calibration")
        _no_data(ax_cnt)
        return fig
    _require(bins, ["mean_predicted", "observed_rate", "count"], "plot_calibration")
    data = bins.sort_values("mean_predicted")
    x = data["mean_predicted"].astype(float).to_numpy()
    counts = data["count"].astype(float).to_numpy()

    ax_rel.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    ax_rel.plot(x, data["observed_rate"].astype(float), marker="o", color="C0", label="model")
    ax_rel.set(title="Calibration", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1.02))
    ax_rel.grid(alpha=0.3)
    ax_rel.legend(loc="upper left", fontsize=9)

    width = 0.8 * float(np.min(np.diff(x))) if len(x) > 1 and np.min(np.diff(x)) > 0 else 0.02
    ax_cnt.bar(x, counts, width=min(width, 0.1), color="C0", alpha=0.6)
    positive = counts[counts > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        ax_cnt.set_yscale("log")
    ax_cnt.set(xlabel="mean predicted probability", ylabel="count")
    ax_cnt.grid(alpha=0.3)
    return fig


def plot_confusion(tp: int, fp: int, fn: int, tn: int, title: str) -> Figure:
    """2x2 confusion matrix (rows: actual fraud/legit, columns: predicted alert/no alert) with counts."""
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.subplots()
    matrix = np.array([[tp, fn], [fp, tn]], dtype=float)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1.0))
    row_totals = matrix.sum(axis=1)
    for i in range(2):
        for j in range(2):
            value = matrix[i, j]
            share = f"\n{value / row_totals[i]:.1%} of row" if row_totals[i] > 0 else ""
            color = "white" if value > matrix.max() / 2 and value > 0 else "black"
            ax.text(j, i, f"{int(value):,}{share}", ha="center", va="center", color=color, fontsize=11)
    ax.set_xticks([0, 1], ["alert", "no alert"])
    ax.set_yticks([0, 1], ["fraud", "legit"])
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    return fig



def plot_alert_confusion(metrics: Mapping[str, float], threshold: float, budget: float) -> Figure:
    """The confusion matrix of a classifier's test ``metrics`` (tp, fp, fn, tn) at its alert threshold."""
    return plot_confusion(
        int(metrics["tp"]),
        int(metrics["fp"]),
        int(metrics["fn"]),
        int(metrics["tn"]),
        f"threshold {threshold:.4g}, budget {budget:.2%}",
    )

_RANKING_METRICS = (("precision", "precision@k"), ("recall", "recall@k"), ("ndcg", "NDCG@k"))


def plot_ranking_curves(curves: pd.DataFrame) -> Figure:
    """Precision@k, recall@k and NDCG@k panels with one line per model."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    if _is_empty(curves):
        for ax, (_, title) in zip(axes, _RANKING_METRICS, strict=True):
            _no_data(ax, title)
        return fig
    _require(curves, ["k", "model", *(m for m, _ in _RANKING_METRICS)], "plot_ranking_curves")
    for ax, (metric, title) in zip(axes, _RANKING_METRICS, strict=True):
        for model in pd.unique(curves["model"]):
            part = curves[curves["model"] == model].sort_values("k")
            ax.plot(part["k"], part[metric].astype(float), marker="o", ms=3, label=str(model))
        ax.set(title=title, xlabel="k")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=9)
    return fig


def plot_rul_scatter(points: pd.DataFrame, cap: float | None) -> Figure:
    """Predicted vs true remaining useful life, with the y=x line and the RUL cap when given."""
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.subplots()
    if _is_empty(points):
        _no_data(ax, "Predicted vs true RUL")
        return fig
    _require(points, ["true_rul", "predicted_rul"], "plot_rul_scatter")
    true = points["true_rul"].astype(float)
    pred = points["predicted_rul"].astype(float)
    ax.scatter(true, pred, s=8, alpha=0.4, color="C0", edgecolors="none", label="sample")
    values = pd.concat([true, pred]).dropna()
    top = float(values.max()) if len(values) else 1.0
    low = min(0.0, float(values.min())) if len(values) else 0.0
    if cap is not None:
        top = max(top, float(cap))
        ax.axvline(cap, color="C3", ls=":", lw=1, label=f"cap ({cap:g})")
        ax.axhline(cap, color="C3", ls=":", lw=1)
    top = top * 1.03 if top > 0 else 1.0
    ax.plot([low, top], [low, top], color="grey", ls="--", lw=1, label="y = x")
    ax.set(xlim=(low, top), ylim=(low, top), xlabel="true RUL", ylabel="predicted RUL")
    ax.set(title="Predicted vs true RUL", aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    return fig


def plot_error_by_bucket(buckets: pd.DataFrame) -> Figure:
    """Grouped bars of RMSE and mean error per true-RUL bucket, in the given order, with counts in labels."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if _is_empty(buckets):
        _no_data(ax, "Error by bucket")
        return fig
    _require(buckets, ["bucket", "count", "rmse", "mean_error"], "plot_error_by_bucket")
    x = np.arange(len(buckets))
    width = 0.38
    ax.bar(x - width / 2, buckets["rmse"].astype(float), width, color="C0", label="RMSE")
    ax.bar(
        x + width / 2,
        buckets["mean_error"].astype(float),
        width,
        color="C1",
        label="mean error (pred − true)",
    )
    ax.axhline(0, color="black", lw=0.8)
    labels = [f"{b}\n(n={int(n):,})" for b, n in zip(buckets["bucket"], buckets["count"], strict=True)]
    ax.set_xticks(x, labels)
    ax.set(title="Error by bucket", xlabel="bucket", ylabel="cycles")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize=9)
    return fig


def plot_feature_importance(importances: Mapping[str, float], top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` largest feature importances, largest on top."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    finite = [(name, float(value)) for name, value in importances.items() if not _is_missing(value)]
    ranked = sorted(finite, key=lambda kv: kv[1], reverse=True)[:top]
    fig = Figure(figsize=(7, max(2.5, 0.32 * len(ranked) + 1.2)), layout="constrained")
    ax = fig.subplots()
    if not ranked:
        _no_data(ax, "Feature importance")
        return fig
    names = [str(name) for name, _ in reversed(ranked)]
    values = [float(value) for _, value in reversed(ranked)]
    ax.barh(names, values, color="C0")
    ax.set(title=f"Feature importance (top {len(ranked)})", xlabel="importance")
    ax.grid(alpha=0.3, axis="x")
    return fig
