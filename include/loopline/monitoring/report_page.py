"""The drift report as a page a person reads: one self-contained HTML file (inline CSS and SVG, no scripts)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from loopline.monitoring.detection import RANGE, DriftReport, Histogram, fmt_p

_REF_COLOUR, _CUR_COLOUR = "#8c8c8c", "#e4572e"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:600;color:#fff}
.concept_drift,.performance_risk{background:#c0392b}.feature_drift{background:#d68910}
.output_shift{background:#b9770e}
.stable{background:#27ae60}.insufficient{background:#7f8c8d}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border-bottom:1px solid #ddd;padding:.35em .7em;text-align:right}
th:first-child,td:first-child{text-align:left} tr.drifted td{background:#fdecea;font-weight:600}
.ctx td,.ctx th{text-align:left;border:none;padding:.1em .8em .1em 0}
.grid{display:flex;flex-wrap:wrap;gap:1.2em} .chart{width:330px} .chart h3{font-size:.95em;margin:.2em 0}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
.muted{color:#777;font-size:.88em}
"""


def _svg_histogram(hist: Histogram, width: int = 320, height: int = 130) -> str:
    if not hist.labels:
        return '<p class="muted">no data</p>'
    top, bottom, left = 8, 24, 4
    plot_h = height - top - bottom
    n = len(hist.labels)
    slot = (width - 2 * left) / n
    peak = max(max(hist.reference, default=0), max(hist.current, default=0)) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - left}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    bar = max(slot / 2 - 0.5, 0.5)
    for i, label in enumerate(hist.labels):
        x0 = left + i * slot
        for j, (share, colour, side) in enumerate(
            ((hist.reference[i], _REF_COLOUR, "reference"), (hist.current[i], _CUR_COLOUR, "current"))
        ):
            h = plot_h * share / peak
            tip = html.escape(f"{label}: {side} {share:.1%}")
            parts.append(
                f'<rect x="{x0 + j * bar + 0.25:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{tip}</title></rect>'
            )
    if n <= 8:  # categories: name each bar
        for i, label in enumerate(hist.labels):
            text = html.escape(label if len(label) <= 11 else label[:10] + "…")
            x = left + (i + 0.5) * slot
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="8" text-anchor="middle">{text}</text>')
    else:  # bins: the range
        low, high = hist.labels[0].split(RANGE)[0], hist.labels[-1].split(RANGE)[-1]
        parts.append(f'<text x="{left}" y="{height - 8}" font-size="9">{html.escape(low)}</text>')
        parts.append(
            f'<text x="{width - left}" y="{height - 8}" font-size="9" text-anchor="end">{html.escape(high)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def history_html(history: Mapping[str, Any] | None) -> str:
    """The estimate against what each window's labels showed: a table and the mean absolute error (or "")."""
    if not history or not history.get("windows"):
        return ""
    e = html.escape

    def num(value: Any, fmt: str = ".3f") -> str:
        return "-" if value is None else e(format(value, fmt))

    rows = "".join(
        f"<tr><td>{e(str(w.get('at') or '-')[:16])}</td><td>v{e(str(w.get('champion_version')))}</td>"
        f"<td>{num(w.get('estimated'))}</td><td>{num(w.get('realised'))}</td><td>{num(w.get('error'), '+.3f')}</td>"
        f"<td>{e(str(w.get('labelled') or 0))}</td></tr>"
        for w in history["windows"]
    )
    metric = str(history["windows"][0].get("metric") or "").upper()
    mae = history.get("mean_absolute_error")
    summary = (
        f"mean absolute error {mae:.3f} over the last {history.get('judged')} windows with labels"
        if mae is not None
        else "no window has enough labels yet to judge the estimate"
    )
    return (
        f'<table class="history"><thead><tr><th>window end</th><th>champion</th><th>estimated {e(metric)}</th>'
        f"<th>realised</th><th>error (est. − real.)</th><th>labelled</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<p class="muted">{e(summary)}</p>'
    )


def render_html(
    report: DriftReport,
    title: str | None = None,
    context: Mapping[str, Any] | None = None,
    verdict: str | None = None,
    impact: Any = None,
    history: Mapping[str, Any] | None = None,
    concept: Any = None,
) -> str:
    """A self-contained page: inline CSS and SVG, no scripts, no external assets; every value HTML-escaped.

    ``verdict``: the check's graded verdict (default: the inputs' own); ``impact``: its ``impact.Impact``;
    ``history``: ``estimate_error.history`` (this window and the earlier ones); ``concept``: its
    ``concept.ConceptVerdict`` (labels: live quality, outcomes against predictions).
    """
    from loopline.monitoring.verdicts import HEADLINES

    e = _text
    title = title or f"Drift report: {report.model}"
    context = context or {}
    verdict = verdict or report.verdict
    policy = report.policy
    rows = []
    for f in sorted(report.features, key=lambda f: (not f.drifted, -f.importance)):
        cells = (
            f.name, f.kind, f"{f.importance:.3f}", f"{f.test} {f.statistic:.3g}", fmt_p(f.p_value), fmt_p(f.q_value),
            _signed_cell(f), _where_cell(f), _effect_cell(f), f"{f.missing_reference:.1%} → {f.missing_current:.1%}",
            "yes" if f.significant else "no", "DRIFTED" if f.drifted else "no",
        )  # fmt: skip
        tds = "".join(f"<td>{e(c)}</td>" for c in cells)
        rows.append(f'<tr class="{"drifted" if f.drifted else ""}">{tds}</tr>')
    table = (
        '<table class="features"><thead><tr><th>feature</th><th>kind</th><th>importance</th><th>statistic</th>'
        "<th>p-value</th><th>q-value (FDR)</th><th>moved (signed)</th><th>reference → live</th>"
        "<th>effect size (floor)</th><th>missing ref → live</th><th>significant</th><th>drifted</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else '<p class="muted">no live rows: nothing to compare</p>'
    )
    charts = []
    if report.score is not None:
        s = report.score
        charts.append(
            f'<div class="chart"><h3>score (model output)</h3>{_svg_histogram(s.histogram)}'
            f'<div class="muted">{e(f"K-S p={fmt_p(s.p_value)}, PSI {s.psi:.3f}")}</div></div>'
        )
    for f in report.features:
        charts.append(
            f'<div class="chart"><h3>{e(f.name)}{" — drifted" if f.drifted else ""}</h3>'
            f'{_svg_histogram(f.histogram)}<div class="muted">'
            f"{e(f'p={fmt_p(f.p_value)}, PSI {f.psi:.3f}, importance {f.importance:.3f}')}</div></div>"
        )
    ctx_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in context.items())
    verdict_text = HEADLINES.get(verdict, verdict.upper())
    impact_html = ""
    if impact is not None:
        policy_obj = _policy(policy)
        mix_rows = "".join(
            f'<tr class="{"drifted" if c.moved else ""}">'
            + "".join(
                f"<td>{e(v)}</td>"
                for v in (
                    c.label,
                    f"{c.reference:.4g}",
                    f"{c.current:.4g}",
                    f"{c.change:+.4g}",
                    fmt_p(c.p_value),
                    "MOVED" if c.moved else "no",
                )
            )  # fmt: skip
            + "</tr>"
            for c in impact.mix
        )
        impact_html = (
            "<h2>Impact on the model</h2><ul>"
            + "".join(f"<li>{e(r)}</li>" for r in impact.reasons(policy_obj))
            + "</ul>"
            + (
                "<table><thead><tr><th>answers</th><th>unseen rows</th><th>live</th><th>change</th>"
                f"<th>p-value</th><th>moved</th></tr></thead><tbody>{mix_rows}</tbody></table>"
                if mix_rows
                else ""
            )
        )
    if concept is not None:
        impact_html += "<h2>Labels: realised quality and outcomes</h2>" + concept_html(concept)
    if history and history.get("windows"):
        impact_html += "<h2>Estimated against realised quality</h2>" + history_html(history)
    score_line = (
        f"score PSI {report.score.psi:.3f} (K-S p={fmt_p(report.score.p_value)})" if report.score else "score: n/a"
    )
    headline = (
        f"drifted inputs carry {report.drift_share:.2f} of the model's importance, {score_line};"
        f" {report.n_current:,} live rows vs {report.n_reference:,} reference rows"
    )
    noise = policy.get("noise_multiple", 3.0)
    rule = (
        f"A feature drifted if the FDR-corrected test is significant at q < {policy['p_value']} and its effect size"
        " reaches the floor for this window's size: numeric, the shift in reference SDs (normalised Wasserstein"
        f" distance) at least {policy.get('min_shift', 0.05)} and {noise}× what sampling noise alone gives;"
        f" categorical, the PSI at least {policy['min_psi']} and {noise}× its no-shift expectation. Numeric:"
        " two-sample K-S; categorical: chi-squared over the spec's levels plus one code for missing/unknown. Missing"
        " numeric values are compared as the reference median. Moved (signed): the mean's move in reference SDs"
        " (+ up), or the level whose share moved most."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p><span class="verdict {e(verdict)}">{e(verdict_text)}</span>
&nbsp; {e(headline)}</p>
<table class="ctx">{ctx_rows}</table>
{impact_html}
<h2>Inputs: why</h2>
<ul>{"".join(f"<li>{e(r)}</li>" for r in report.reasons)}</ul>
<h2>Features</h2>
<p class="muted">{e(rule)}</p>
{table}
<h2>Distributions</h2>
<p class="legend"><span style="background:{_REF_COLOUR}"></span>reference (champion's training data)
<span style="background:{_CUR_COLOUR}"></span>live window</p>
<div class="grid">{"".join(charts)}</div>
<p class="muted">Policy: {e(", ".join(f"{k}={v}" for k, v in policy.items()))}</p>
</body></html>
"""


def _text(value: Any) -> str:
    """Any value as escaped HTML text (numbers and p-values too: "< 1e-38" must not open a tag)."""
    return html.escape(str(value))


def concept_html(concept: Any) -> str:
    """The labels' channel: live quality at the window's size, and each outcome rate, share or mean against what
    the champion predicts (``concept.ConceptVerdict``)."""
    e = _text
    rows = "".join(
        f'<tr class="{"drifted" if o.moved else ""}">'
        + "".join(
            f"<td>{e(v)}</td>"
            for v in (
                o.label,
                _share_or_value(o.label, o.predicted),
                _share_or_value(o.label, o.observed),
                f"{o.reference_gap:+.3g}",
                f"{o.shift:+.3g}",
                fmt_p(o.p_value),
                "MOVED" if o.moved else "no",
            )
        )  # fmt: skip
        + "</tr>"
        for o in getattr(concept, "outcomes", ())
    )
    table = (
        "<table><thead><tr><th>outcome</th><th>predicted (live)</th><th>observed (live)</th>"
        "<th>gap on the unseen rows</th><th>gap moved by</th><th>p-value</th><th>moved</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f"<p>{e(concept.reason)}</p>{table}"


def _share_or_value(label: str, value: float) -> str:
    return f"{value:.4g}" if label == "mean outcome" else f"{value:.1%}"


def _signed_cell(feature: Any) -> str:
    signed = getattr(feature, "signed_shift", None)
    if signed is not None:
        return f"{signed:+.2f} SD"
    moved = feature.level_shares()[:1] if hasattr(feature, "level_shares") else []
    return "".join(f"{level} {(b - a) * 100:+.1f} points" for level, a, b in moved) or "-"


def _where_cell(feature: Any) -> str:
    if getattr(feature, "reference_mean", None) is not None:
        return (
            f"mean {_num(feature.reference_mean)} → {_num(feature.current_mean)}; median"
            f" {_num(feature.reference_median)} → {_num(feature.current_median)}"
        )
    levels = feature.level_shares()[:3] if hasattr(feature, "level_shares") else []
    return "; ".join(f"{level} {a:.0%} → {b:.0%}" for level, a, b in levels) or "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _effect_cell(feature: Any) -> str:
    shift = getattr(feature, "shift", None)
    floor = getattr(feature, "effect_floor", None)
    size = f"shift {shift:.3f} SD" if shift is not None else f"PSI {feature.psi:.3f}"
    return size if floor is None else f"{size} ({floor:.3f})"


def _policy(policy: Mapping[str, Any]):
    from loopline.core.spec import DriftPolicy

    return DriftPolicy.model_validate(policy)


# ---------------------------------------------------------------------------------------------
# Concept drift from labels
# ---------------------------------------------------------------------------------------------
