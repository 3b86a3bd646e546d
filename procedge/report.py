"""The bench report: one table (terminal, Markdown) plus a student-vs-teacher summary, and JSON."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from procedge.io import write_json, write_text

COLUMNS = ("model", "format", "prec", "status", "acc %", "Δacc pts", "size MB", "p50 ms", "p90 ms", "p99 ms", "mean±std ms", "img/s",
           "pred host ms", "pred target ms")


def _reference_accuracy(row: dict, rows: list[dict]) -> float | None:
    """The same model's fp32 accuracy: the same format if it has fp32, else the ONNX export."""
    for fmt in (row["format"], "onnx"):
        for other in rows:
            if (other["model"], other["format"], other["precision"]) == (row["model"], fmt, "fp32") and other["accuracy"] is not None:
                return other["accuracy"]
    return None


def _cells(row: dict, rows: list[dict]) -> list[str]:
    lat = row["latency"]
    reference = _reference_accuracy(row, rows)
    delta = 100 * (row["accuracy"] - reference) if row["accuracy"] is not None and reference is not None else None

    def num(value, fmt):
        return format(value, fmt) if value is not None else "-"

    status = {"ok": "ok", "failed": f"FAILED: {row['reason']}"}.get(row["status"], f"{row['status']}: {row['reason']}")
    return [
        row["model"], row["format"], row["precision"], status,
        num(row["accuracy"] * 100 if row["accuracy"] is not None else None, ".2f"),
        num(delta, "+.2f"),
        num(row["size_mb"], ".1f"),
        num(lat.get("p50_ms"), ".3f"), num(lat.get("p90_ms"), ".3f"), num(lat.get("p99_ms"), ".3f"),
        f"{lat['mean_ms']:.3f}±{lat['std_ms']:.3f}" if lat else "-",
        num(lat.get("throughput_fps"), ".0f"),
        num(row["predicted_host_ms"], ".3f"), num(row["predicted_target_ms"], ".3f"),
    ]


def rows_below(report: dict, min_accuracy: float) -> list[str]:
    """Deployed-student rows that failed or score under `min_accuracy` (for users' CI gates); engines left
    to build on the device (`not built`) are not measured here and not counted."""
    out = []
    for row in report["rows"]:
        if row["model"] != "student" or row["status"] == "not built":
            continue
        name = f"{row['format']} {row['precision']}"
        if row["status"] != "ok":
            out.append(f"{name} failed")
        elif row["accuracy"] < min_accuracy:
            out.append(f"{name} {row['accuracy']:.4f}")
    return out


def trade_line(row: dict, teacher: dict) -> str:
    """The headline of a format and precision: how much faster the student is, and the points it gives up to the probe."""
    line = (f"{row['format']} {row['precision']}: student {row['speedup']:.1f}x faster than the teacher "
            f"({row['latency']['p50_ms']:.2f} vs {teacher['latency']['p50_ms']:.2f} ms p50), {row['accuracy']:.1%} vs probe "
            f"{teacher['accuracy']:.1%} ({row['points_vs_probe']:+.1f} pts)")
    if row.get("asked_speedup") and row["speedup"] < row["asked_speedup"]:
        line += f"; BELOW the asked {row['asked_speedup']:g}x"
    return line


def headlines(report: dict) -> list[str]:
    """One trade line per format and precision where both the student and the teacher were measured."""
    teachers = {(r["format"], r["precision"]): r for r in report["rows"] if r["model"] == "teacher"}
    return [trade_line(r, teachers[(r["format"], r["precision"])]) for r in report["rows"]
            if r["model"] == "student" and r.get("speedup") is not None]


def summarize(report: dict) -> list[str]:
    """Per backend: the folded augmentation's overhead, and the student's predicted against measured latency."""
    lines = []
    for student in report["rows"]:
        if student["model"] != "student" or student["status"] != "ok":
            continue
        fmt, precision = student["format"], student["precision"]
        overhead = report.get("augmentation_overhead", {}).get(f"{fmt} {precision}")
        s50 = student["latency"]["p50_ms"]
        parts = []
        if overhead:
            parts.append(f"augmentation overhead {overhead['overhead_pct']:+.1f}% "
                         f"({overhead['p50_with_ms']:.3f} vs {overhead['p50_without_ms']:.3f} ms without)")
        if student["predicted_host_ms"]:
            parts.append(f"student predicted {student['predicted_host_ms']:.3f} ms on this host (measured/predicted {s50 / student['predicted_host_ms']:.2f})")
        if parts:
            lines.append(f"{fmt} {precision}: " + "; ".join(parts))
    return lines


def points(student: float, probe: float) -> str:
    """Accuracy against the teacher's probe in points: "+1.2 pts over the probe" or "-3.8 pts under it"."""
    diff = 100 * (student - probe)
    return f"{diff:+.1f} pts {'over' if diff >= 0 else 'under'} the probe"


def distillation_lines(report: dict) -> list[str]:
    """The student's held-out accuracy (PyTorch, at the end of distill) beside the student alone and the teacher's probe."""
    d = report.get("distillation")
    if not d:
        return []

    def images(r: dict) -> str:
        return f"{r['train_images']} labelled" + (f" + {r['unlabeled_images']} unlabelled" if r.get("unlabeled_images") else "") + " images"

    probe = d["teacher_probe_accuracy"]
    lines = [f"{d['method']} student: {d['student_accuracy']:.2%} held-out ({points(d['student_accuracy'], probe)}), trained on {images(d)}"]
    base = d.get("baseline")
    if base:
        lines.append(f"{base['method']} student ({base['run']}): {base['student_accuracy']:.2%} held-out "
                     f"({points(base['student_accuracy'], probe)}), trained on {images(base)}")
    lines.append(f"teacher linear probe: {probe:.2%} held-out")
    return lines


def _device_line(d: dict) -> str:
    line = f"{d['cpu']}, {d['logical_cores']} logical cores"
    if d.get("measured_fp32_gflops") is None:
        return line + "; host figures not measured (needs onnxruntime and onnx)"
    return (line + f"; measured with ONNX Runtime micro-graphs: {d['measured_fp32_gflops']} GFLOP/s fp32 conv, "
            f"{d['measured_copy_gbs']} GB/s, {d['measured_op_overhead_us']} us per op")


def render(report: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 200)
    table = Table(title=f"procedge bench: {report['run']} (target {report['target']}, {report['heldout_images']} held-out images)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "format", "prec", "status") else "right")
    for row in report["rows"]:
        table.add_row(*_cells(row, report["rows"]), style={"ok": None, "failed": "red"}.get(row["status"], "yellow"))
    for line in headlines(report):
        console.print(f"[bold]{line}[/bold]", highlight=False)
    console.print(table)
    for line in summarize(report) + distillation_lines(report):
        console.print(f"  {line}", highlight=False)
    console.print(f"  device: {_device_line(report['device'])}", highlight=False)


def markdown(report: dict, pictures: dict[str, str] | None = None) -> str:
    """The report as Markdown; `pictures` (caption -> PNG file name beside it) are embedded after the table."""
    lines = [f"# procedge bench: {report['student']} distilled from {report['teacher']} for {report['target']}", ""]
    lines += [f"**{line}**  " for line in headlines(report)] + ([""] if headlines(report) else [])
    lines += [
             f"Held-out images: {report['heldout_images']}. Single-stream batch-1 latency "
             f"(warm-up {report['timing_policy']['warmup_runs']} runs / {report['timing_policy']['warmup_seconds']} s, "
             f"then at least {report['timing_policy']['min_runs']} runs and {report['timing_policy']['min_seconds']} s per model, "
             "the models of one format timed in interleaved blocks of 50 calls, each after a 20 ms pause and 3 untimed calls).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row, report["rows"])) + " |" for row in report["rows"]]
    for caption, name in (pictures or {}).items():
        lines += ["", f"![{caption}]({name})"]
    lines += ["", "## Summary", ""] + [f"- {line}" for line in summarize(report)]
    if report.get("distillation"):
        lines += ["", "## Distillation (held-out accuracy at the end of `procedge distill`, PyTorch)", ""]
        lines += [f"- {line}" for line in distillation_lines(report)]
    d = report["device"]
    lines += ["", "## Device", "", f"- {_device_line(d)}",
              f"- platform: {d['platform']}, Python {d['python']}, OMP_NUM_THREADS={d['omp_num_threads']}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in d["versions"].items())]
    settings = {(r["format"], r["precision"]): r["settings"] for r in report["rows"] if r["settings"]}
    lines += [f"- {fmt} {precision}: " + ", ".join(f"{k}={v}" for k, v in s.items()) for (fmt, precision), s in settings.items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict, json_path: Path, markdown_path: Path, plot_path: Path | None = None,
                 training_plot: Path | None = None) -> None:
    """JSON, Markdown and, with `plot_path`, the accuracy-latency PNG (the training curves' PNG is embedded when it exists)."""
    from procedge.plots import accuracy_latency_png

    write_json(json_path, report)
    pictures = {}
    if plot_path is not None and accuracy_latency_png(report, plot_path, report.get("latency_budget_ms"), tuple(headlines(report))):
        pictures["accuracy against p50 latency"] = plot_path.name
    if training_plot is not None and training_plot.exists():
        pictures["training curves"] = training_plot.name
    write_text(markdown_path, markdown(report, pictures))
