"""Pictures beside the reports: accuracy against latency (bench) and the training curves (distill).

matplotlib, headless (Agg). It comes with the full install; a device install without it writes the
reports without pictures and says so once.
"""

from __future__ import annotations

from pathlib import Path

from procedge.io import atomic_path
from procedge.progress import info

STYLES = {"deployed": ("o", "tab:blue"), "twin": ("s", "tab:cyan"), "teacher": ("^", "tab:orange")}  # by a variant's role


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        info("matplotlib is not installed: no PNG written (pip install matplotlib, or the full install)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def accuracy_latency_png(report: dict, path: Path, budget_ms: float | None, headlines: tuple[str, ...] = ()) -> Path | None:
    """Held-out accuracy against p50 latency for every measured row (model x format x precision), the trade `headlines`
    under the title."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib import ticker

    rows = [r for r in report["rows"] if r["status"] == "ok" and r["accuracy"] is not None and r["latency"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    twins = report.get("twins", {})
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [r for r in rows if r["model"] == model]
        role = "teacher" if model == "teacher" else "twin" if model in twins else "deployed"
        marker, color = STYLES[role]
        label = f"{twins[model]} without augmentation ({model})" if role == "twin" else model
        ax.scatter([r["latency"]["p50_ms"] for r in points], [100 * r["accuracy"] for r in points], marker=marker, color=color,
                   label=label, s=48, zorder=3)
        for r in points:
            ax.annotate(f"{r['format']} {r['precision']}", (r["latency"]["p50_ms"], 100 * r["accuracy"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    if budget_ms:
        ax.axvline(budget_ms, color="tab:red", linestyle="--", label=f"target budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_title("\n".join([f"{report['student']} from {report['teacher']} for {report['target']}", *headlines]), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    path = _save(fig, path)
    plt.close(fig)
    return path


def training_curves_png(history: list[dict], path: Path, title: str) -> Path | None:
    """Each loss term (left) and the held-out accuracy (right) per epoch."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for name in [k for k in history[0] if k.startswith("loss_")]:
        losses.plot(epochs, [h.get(name) for h in history], marker=".", label=name.removeprefix("loss_"))
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss term (unweighted)")
    losses.set_yscale("symlog", linthresh=0.01)
    losses.legend(fontsize=7, ncol=2)
    losses.grid(True, alpha=0.3)
    accuracy.plot(epochs, [100 * h.get("heldout_accuracy", float("nan")) for h in history], marker="o", color="tab:green")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("held-out top-1 accuracy (%)")
    accuracy.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path
