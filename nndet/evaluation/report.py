"""The metrics of :func:`nndet.evaluation.metrics.evaluate` as a plain-text table."""

from __future__ import annotations

import re
from typing import Any

_EXTRA_AP = re.compile(r"^AP@(?P<t>[0-9.]+)$")


def _number(value: float | None, width: int = 8) -> str:
    return f"{'-' if value is None else f'{value:.3f}':>{width}}"


def format_table(metrics: dict[str, Any]) -> str:
    """A table of per-class AP (IoU 0.1 and any extra thresholds) and patient AP, the means,
    and the FROC sensitivities; ``-`` marks a class without ground truth."""
    ap_keys = ["AP@0.1"] + [k for k in metrics if _EXTRA_AP.match(k) and k != "AP@0.1"]
    classes = list(metrics["AP@0.1"])
    name_width = max([len("class"), len("mAP@0.1:0.5"), *(len(c) for c in classes)])
    header = f"{'class':<{name_width}}" + "".join(f"{k:>10}" for k in ap_keys)
    header += f"{'patient AP':>12}"
    lines = [f"cases: {metrics['num_cases']}", header, "-" * len(header)]

    for name in classes:
        row = f"{name:<{name_width}}" + "".join(_number(metrics[k][name], 10) for k in ap_keys)
        lines.append(row + _number(metrics["patient_AP"][name], 12))
    mean_row = f"{'mean':<{name_width}}"
    mean_row += "".join(_number(metrics["m" + k], 10) for k in ap_keys)
    lines += ["-" * len(header), mean_row]
    lines.append(f"{'mAP@0.1:0.5':<{name_width}}{_number(metrics['mAP@0.1:0.5'], 10)}")

    froc = metrics["FROC@0.1"]
    lines.append("")
    lines.append("FROC@0.1  FP/case  " + "".join(f"{r:>7g}" for r in froc["fp_per_case"]))
    sensitivities = "".join(_number(s, 7) for s in froc["sensitivity"])
    lines.append("      sensitivity  " + sensitivities)
    lines.append(f"              CPM  {_number(froc['CPM'], 7)}")
    return "\n".join(lines)
