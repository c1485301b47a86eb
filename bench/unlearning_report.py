"""The unlearning bench's summary: the distribution (median and worst) of each measure over the
scenario family, pass/fail against issue 11's targets, the printed tables and the plot.

Targets (worst case over the family, DP off): attack success within 5 points of retraining;
dominant-class accuracy within 3 points of retraining in both directions; test accuracy within 2
points; distance to the oracle at most half the original model's; history at least 50× smaller
than fp32; the deletion at least 100× faster than retraining; recording the history at most 20%
extra training time. With DP on the same measures are reported beside the spread of two
independent retrainings (no pass/fail: the spread is the yardstick).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# name: (row key path, how the worst case is taken, target test, target text)
MEASURES = {
    "attack success gap (pts)": (("unlearned", "attack_gap"), "abs", lambda w: w <= 5.0, "|gap| <= 5"),
    "dominant-class gap, above (pts)": (("unlearned", "dominant_gap"), "max", lambda w: w <= 3.0, "<= +3"),
    "dominant-class gap, below (pts)": (("unlearned", "dominant_gap"), "min", lambda w: w >= -3.0, ">= -3"),
    "test accuracy gap (pts)": (("unlearned", "test_gap"), "abs", lambda w: w <= 2.0, "|gap| <= 2"),
    "distance / original's": (("unlearned", "distance"), "max", lambda w: w <= 0.5, "<= 0.5"),
    "MIA AUC gap, class-matched (pts)": (("unlearned", "membership_gap"), "abs", None, "reported"),
    "history vs fp32 (x smaller)": (("history_ratio",), "min", lambda w: w >= 50.0, ">= 50x"),
    "deletion speed-up vs retraining (x)": (("speedup",), "min", lambda w: w >= 100.0, ">= 100x"),
    "recording overhead (training)": (("recording_overhead",), "max", lambda w: w <= 0.20, "<= 20%"),
}
REFERENCE = {  # the same gaps before unlearning, and (DP on) between the two retrainings
    "attack success gap (pts)": ("attack_gap", "abs"),
    "dominant-class gap, above (pts)": ("dominant_gap", "max"),
    "dominant-class gap, below (pts)": ("dominant_gap", "min"),
    "test accuracy gap (pts)": ("test_gap", "abs"),
    "distance / original's": ("distance", "max"),
    "MIA AUC gap, class-matched (pts)": ("membership_gap", "abs"),
}


def _get(row: dict, path: tuple[str, ...]):
    value = row
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return None if isinstance(value, float) and math.isnan(value) else value


def _distribution(values: list[float], worst: str) -> dict | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    if worst == "abs":
        return {"median": float(np.median(array)), "worst": float(array[np.argmax(np.abs(array))]),
                "worst_abs": float(np.max(np.abs(array))), "count": len(values)}
    if worst == "min":
        return {"median": float(np.median(array)), "worst": float(np.min(array)), "count": len(values)}
    return {"median": float(np.median(array)), "worst": float(np.max(array)), "count": len(values)}


def summarize(rows: list[dict]) -> dict:
    """{dp: {measure: {median, worst, count, target, passed, original, spread}}}."""
    summary: dict = {}
    for dp in ("off", "on"):
        selected = [r for r in rows if r["dp"] == dp]
        if not selected:
            continue
        table = {}
        for name, (path, worst, test, text) in MEASURES.items():
            values = [v for r in selected if (v := _get(r, path)) is not None]
            entry = _distribution(values, worst) or {"count": 0}
            entry["target"] = text
            if test is not None and dp == "off" and "worst" in entry:
                entry["passed"] = bool(test(entry.get("worst_abs", entry["worst"])))
            if name in REFERENCE:
                key, how = REFERENCE[name]
                for reference in ("original", "oracle_spread"):
                    found = [v for r in selected if (v := _get(r, (reference, key))) is not None]
                    if found:
                        entry[reference] = _distribution(found, how)
            table[name] = entry
        table["scenarios"] = len(selected)
        table["failed steps"] = sum(1 for r in selected if r.get("errors"))
        table["bench oracles"] = sum(1 for r in selected if "bench fallback" in r.get("oracle_source", []))
        summary[dp] = table
    return summary


def _fmt(value, spec=".2f") -> str:
    return "—" if value is None else format(value, spec)


def scenario_table(rows: list[dict]) -> str:
    header = (f"{'scenario':<44} {'dp':>3} {'atk o→u/r':>17} {'dom gap':>8} {'test gap':>8} {'dist':>6} "
              f"{'MIA u/r':>11} {'hist x':>7} {'speedup':>8} {'rec ovh':>8}  errors")
    lines = [header, "-" * len(header)]
    for r in rows:
        s = r["scenario"]
        models = r.get("models", {})
        attack = [models.get(m, {}).get("attack_success") for m in ("original", "unlearned", "oracle_1")]
        attack_text = "—" if attack[0] is None else "/".join(_fmt(a, ".2f") for a in attack)
        mia = f"{_fmt(models.get('unlearned', {}).get('membership_auc'))}/" \
              f"{_fmt(models.get('oracle_1', {}).get('membership_auc'))}"
        overhead = r.get("recording_overhead")
        lines.append(
            f"{s['label'] + ' s' + str(s['seed'] % 1000):<44} {r['dp']:>3} {attack_text:>17} "
            f"{_fmt(_get(r, ('unlearned', 'dominant_gap')), '+.1f'):>8} "
            f"{_fmt(_get(r, ('unlearned', 'test_gap')), '+.1f'):>8} "
            f"{_fmt(_get(r, ('unlearned', 'distance'))):>6} {mia:>11} {_fmt(r.get('history_ratio'), '.1f'):>7} "
            f"{_fmt(r.get('speedup'), '.0f'):>8} {'—' if overhead is None else f'{100 * overhead:+.0f}%':>8}  "
            + ("[bench oracle] " if "bench fallback" in r.get("oracle_source", []) else "")
            + "; ".join(f"{k}: {v[:90]}" for k, v in r.get("errors", {}).items()))
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    lines = []
    for dp, table in summary.items():
        lines.append(f"\nDP {dp}: {table['scenarios']} scenario runs ({table['failed steps']} with a failed step, "
                     f"{table.get('bench oracles', 0)} measured against the bench's fallback oracle)")
        extra = "before unlearning / two retrainings' spread" if dp == "on" else "before unlearning"
        header = f"{'measure':<38} {'median':>9} {'worst':>9} {'target':>11} {'pass':>5}   {extra} (median, worst)"
        lines += [header, "-" * len(header)]
        for name in MEASURES:
            entry = table[name]
            passed = {True: "yes", False: "NO"}.get(entry.get("passed"), "")
            refs = []
            for reference in ("original", "oracle_spread"):
                if entry.get(reference):
                    refs.append(f"{entry[reference]['median']:+.2f}, {entry[reference]['worst']:+.2f}")
            spec = "+.2f" if ("gap" in name or "overhead" in name) else ".2f"
            lines.append(f"{name:<38} {_fmt(entry.get('median'), spec):>9} {_fmt(entry.get('worst'), spec):>9} "
                         f"{entry['target']:>11} {passed:>5}   {' / '.join(refs)}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """The gaps per scenario kind: one panel per measure, DP off and on side by side, the two
    retrainings' spread (DP on) in grey, the target as a dashed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("attack_gap", "attack success gap to retraining (pts)", 5.0),
              ("dominant_gap", "dominant-class accuracy gap (pts)", 3.0),
              ("test_gap", "test accuracy gap (pts)", 2.0),
              ("distance", "distance to oracle / original's", 0.5))
    kinds = sorted({r["scenario"]["kind"] for r in rows})
    markers = {"digits": "o", "mnist5k": "s", "synthetic": "^"}
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    rng = np.random.default_rng(0)
    for axis, (key, title, target) in zip(axes, panels):
        for series, offset, colour, label in (("off", -0.18, "tab:blue", "DP off"),
                                              ("on", 0.12, "tab:orange", "DP on")):
            for row in (r for r in rows if r["dp"] == series):
                x = kinds.index(row["scenario"]["kind"]) + offset + rng.uniform(-0.06, 0.06)
                value = _get(row, ("unlearned", key))
                if value is not None:
                    axis.scatter([x], [value], color=colour, marker=markers.get(row["scenario"]["dataset"], "o"),
                                 s=28, label=label)
                spread = _get(row, ("oracle_spread", key))
                if spread is not None:
                    axis.scatter([x + 0.12], [spread], color="grey", marker="x", s=22,
                                 label="retrain vs retrain (DP on)")
        if key == "distance":
            axis.axhline(target, color="tab:red", linestyle="--", linewidth=1)
            axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        else:
            axis.axhspan(-target, target, color="tab:green", alpha=0.12)
            axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xticks(range(len(kinds)), [k.replace("_", " ") for k in kinds])
        axis.set_xlim(-0.6, len(kinds) - 0.4)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    for dataset, marker in markers.items():
        unique[dataset] = axes[0].scatter([], [], color="black", marker=marker, s=20)
    figure.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), fontsize=8)
    figure.suptitle("Unlearning vs retraining over the scenario family (target band/line in green/red)", fontsize=10)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
