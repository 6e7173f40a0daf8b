"""The evaluation report: Markdown tables (clean metrics, per group, degradations, the uncertain band,
leave-one-family-out) and the files `dualsight evaluate` writes (`report.md`, `results.json`, plots).
"""

import json
from pathlib import Path

import numpy as np

from ..machine import machine_line


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _f(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def markdown_report(result: dict, title: str = "Evaluation") -> str:
    """The report as Markdown: clean metrics, per group, the degradation table and the uncertain band."""
    clean, settings = result["clean"], result["settings"]
    lines = [f"### {title}\n",
             f"{settings['count']} images; temperature {settings['temperature']:.3f}, decision threshold "
             f"{settings['decision_threshold']:.3f} on P(ai_generated), uncertain band "
             f"+/-{settings['uncertain_band']:.2f}.\n",
             _row(["condition", "accuracy", "AUROC", "ECE"]), _row(["---"] * 4),
             _row(["clean, raw (argmax)", _f(clean["raw"]["accuracy"]), _f(clean["raw"]["auroc"]),
                   _f(clean["raw"]["ece"])]),
             _row(["clean, calibrated", _f(clean["calibrated"]["accuracy_at_threshold"]),
                   _f(clean["calibrated"]["auroc"]), _f(clean["calibrated"]["ece"])])]
    lines += [_row([f"{d['degradation']} {d['level']:g}", _f(d["accuracy_at_threshold"]), _f(d["auroc"]),
                    _f(d["ece"])]) for d in result["degradations"]]
    groups = next((k for k in clean if k.startswith("by_")), None)
    if groups:
        lines += ["", f"Clean, calibrated, per {groups[3:]}:\n", _row([groups[3:], "accuracy", "AUROC", "images"]),
                  _row(["---"] * 4)]
        lines += [_row([g, _f(m["accuracy_at_threshold"]), _f(m["auroc"]), str(m["count"])])
                  for g, m in clean[groups].items()]
    if result.get("shortcut_check"):
        check = result["shortcut_check"]
        lines += ["", "Shortcut check: size and JPEG quality swapped between the classes (a model that keys on them "
                  "scores the two arrangements very differently):\n",
                  _row(["arrangement", "accuracy", "AUROC"]), _row(["---"] * 3)]
        lines += [_row([name, _f(m["accuracy_at_threshold"]), _f(m["auroc"])])
                  for name, m in check["arrangements"].items()]
        lines.append(_row(["difference", _f(check["accuracy_gap"]), _f(check["auroc_gap"])]))
    if result.get("uncertain_band"):
        lines += ["", "Uncertain band (images inside it are answered `uncertain`):\n",
                  _row(["band", "decided", "accuracy of decided", "accuracy without band"]), _row(["---"] * 4)]
        lines += [_row([f"+/-{b['band']:.2f}", f"{b['coverage']:.1%}", _f(b["accuracy_decided"]),
                        _f(b["accuracy_all"])]) for b in result["uncertain_band"]]
    return "\n".join(lines) + "\n"


def leave_one_family_out_markdown(report: dict) -> str:
    """
    The leave-one-family-out table (`benchmarks/leave_one_family_out.py`) as Markdown: a row per held-out generator
    family (and per source of a family with several), a column per recipe variant (held-out accuracy / balanced
    accuracy / AUROC), the in-domain validation AUROC of each run, the means and the chosen variant.
    """
    variants = report["variants"]

    def cell(metrics: dict, bold: bool = False) -> str:
        text = f"{metrics['accuracy']:.3f} / {metrics['balanced_accuracy']:.3f} / {metrics['auroc']:.3f}"
        return f"**{text}**" if bold else text

    protocol = f"{report['epochs']:g} epoch(s) per run"
    limits = report.get("limits", {})
    for split in ("train", "validation", "test"):
        if limits.get(f"max_{split}_samples"):
            protocol += f", at most {limits[f'max_{split}_samples']} {split} images"
    lines = [f"Measured on {machine_line(report['machine'])}; recipe `{report['recipe']}`, {protocol}. Each cell: "
             "accuracy / balanced accuracy / AUROC on the held-out family, which no training or model selection of "
             "that run saw; the last column is each run's validation AUROC on the families it trained on "
             "(in-domain).\n",
             "| held out | images | " + " | ".join(variants) + " | in-domain AUROC |",
             "|---|---|" + "---|" * len(variants) + "---|"]
    for family, runs in report["runs"].items():
        first = runs[variants[0]]
        lines.append(f"| **{family}** | {first['test']['count']} | "
                     + " | ".join(cell(runs[v]["test"], bold=True) for v in variants) + " | "
                     + " / ".join(f"{runs[v]['validation_auroc']:.3f}" for v in variants) + " |")
        if len(first["test_by_source"]) > 1:
            for source in sorted(first["test_by_source"]):
                lines.append(f"| &nbsp;&nbsp;{source} | {first['test_by_source'][source]['count']} | "
                             + " | ".join(cell(runs[v]["test_by_source"][source]) for v in variants) + " | |")
    heldout, balanced = report["mean_heldout_auroc"], report["mean_heldout_balanced_accuracy"]
    in_domain = report["mean_in_domain_auroc"]
    lines.append("| **mean held-out balanced accuracy / AUROC** | | "
                 + " | ".join(f"**{balanced[v]:.3f} / {heldout[v]:.3f}**" for v in variants) + " | "
                 + " / ".join(f"{in_domain[v]:.3f}" for v in variants) + " |")
    lines.append(f"\nFor the mobile model: **{report['chosen_variant']}**, the best mean held-out AUROC.")
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir, title: str = "Evaluation", before_temperature: float | None = None) -> Path:
    """
    Write `report.md`, `results.json` and the plots (`degradations.png` when degradations were evaluated;
    `reliability.png`, before and after temperature scaling, for two-class models) into `out_dir`.
    """
    from .plots import plot_degradations, plot_reliability_comparison

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown_report(result, title))
    summary = {k: v for k, v in result.items() if k not in ("raw_logits", "labels")}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2))
    if result["degradations"]:
        plot_degradations(result["degradations"], out_dir / "degradations.png")
    if "raw_logits" in result:
        logits, labels = np.asarray(result["raw_logits"]), np.asarray(result["labels"])
        temperature = result["settings"]["temperature"]
        plot_reliability_comparison(logits, labels, temperature, out_dir / "reliability.png")
    return out_dir
