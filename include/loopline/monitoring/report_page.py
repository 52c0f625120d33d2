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
    title: str,
    context: Mapping[str, Any],
    verdict: str | None = None,
    impact: Any = None,
    history: Mapping[str, Any] | None = None,
) -> str:
    """``verdict``: the check's graded verdict (default: the inputs' own); ``impact``: its ``impact.Impact``;
    ``history``: ``estimate_error.history`` (this window and the earlier ones)."""
    from loopline.monitoring.verdicts import HEADLINES

    e = html.escape
    verdict = verdict or report.verdict
    policy = report.policy
    rows = []
    for f in sorted(report.features, key=lambda f: (not f.drifted, -f.importance)):
        rows.append(
            f'<tr class="{"drifted" if f.drifted else ""}"><td>{e(f.name)}</td><td>{e(f.kind)}</td>'
            f"<td>{f.importance:.3f}</td><td>{e(f.test)} {f.statistic:.3g}</td><td>{fmt_p(f.p_value)}</td>"
            f"<td>{fmt_p(f.q_value)}</td><td>{_effect_cell(f)}</td>"
            f"<td>{f.missing_reference:.1%} → {f.missing_current:.1%}</td>"
            f"<td>{'yes' if f.significant else 'no'}</td><td>{'DRIFTED' if f.drifted else 'no'}</td></tr>"
        )
    table = (
        '<table class="features"><thead><tr><th>feature</th><th>kind</th><th>importance</th><th>statistic</th>'
        "<th>p-value</th><th>q-value (FDR)</th><th>effect size (floor)</th><th>missing ref → live</th>"
        "<th>significant</th><th>drifted</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else '<p class="muted">no live rows: nothing to compare</p>'
    )
    charts = []
    if report.score is not None:
        s = report.score
        charts.append(
            f'<div class="chart"><h3>score (model output)</h3>{_svg_histogram(s.histogram)}'
            f'<div class="muted">K-S p={fmt_p(s.p_value)}, PSI {s.psi:.3f}</div></div>'
        )
    for f in report.features:
        charts.append(
            f'<div class="chart"><h3>{e(f.name)}{" — drifted" if f.drifted else ""}</h3>'
            f'{_svg_histogram(f.histogram)}<div class="muted">p={fmt_p(f.p_value)}, PSI {f.psi:.3f}, '
            f"importance {f.importance:.3f}</div></div>"
        )
    ctx_rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in context.items())
    verdict_text = HEADLINES.get(verdict, verdict.upper())
    impact_html = ""
    if impact is not None:
        policy_obj = _policy(policy)
        mix_rows = "".join(
            f'<tr class="{"drifted" if c.moved else ""}"><td>{e(c.label)}</td><td>{c.reference:.4g}</td>'
            f"<td>{c.current:.4g}</td><td>{c.change:+.4g}</td><td>{fmt_p(c.p_value)}</td>"
            f"<td>{'MOVED' if c.moved else 'no'}</td></tr>"
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
    if history and history.get("windows"):
        impact_html += "<h2>Estimated against realised quality</h2>" + history_html(history)
    score_line = (
        f"score PSI {report.score.psi:.3f} (K-S p={fmt_p(report.score.p_value)})" if report.score else "score: n/a"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p><span class="verdict {e(verdict)}">{e(verdict_text)}</span>
&nbsp; drifted inputs carry {report.drift_share:.2f} of the model's importance,
{score_line}; {report.n_current:,} live rows vs {report.n_reference:,} reference rows</p>
<table class="ctx">{ctx_rows}</table>
{impact_html}
<h2>Inputs: why</h2>
<ul>{"".join(f"<li>{e(r)}</li>" for r in report.reasons)}</ul>
<h2>Features</h2>
<p class="muted">A feature drifted if the FDR-corrected test is significant at q &lt; {policy["p_value"]}
and its effect size reaches the floor for this window's size: numeric, the shift in reference SDs
(normalised Wasserstein distance) at least {policy.get("min_shift", 0.05)} and
{policy.get("noise_multiple", 3.0)}&times; what sampling noise alone gives; categorical, the PSI at least
{policy["min_psi"]} and {policy.get("noise_multiple", 3.0)}&times; its no-shift expectation. Numeric: two-sample
K-S; categorical: chi-squared over the spec's levels plus one code for missing/unknown. Missing numeric values
are compared as the reference median.</p>
{table}
<h2>Distributions</h2>
<p class="legend"><span style="background:{_REF_COLOUR}"></span>reference (champion's training data)
<span style="background:{_CUR_COLOUR}"></span>live window</p>
<div class="grid">{"".join(charts)}</div>
<p class="muted">Policy: {e(", ".join(f"{k}={v}" for k, v in policy.items()))}</p>
</body></html>
"""


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
