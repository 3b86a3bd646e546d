"""The `procedge` command line: thin wrappers over the library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from procedge.errors import ProcedgeError

FORMATS = ("onnx", "openvino", "ort", "trt")


class ProcedgeGroup(click.Group):
    """Prints a ProcedgeError as one line on stderr and exits with status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProcedgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=ProcedgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="procedge")
def main() -> None:
    """Distill a student sized for an edge target from a cross-task teacher, export and compile it, and bench it."""


@main.command()
def targets() -> None:
    """List the hardware profiles with their backend, default precision and latency budget."""
    from rich.console import Console
    from rich.table import Table

    from procedge.targets import builtin_profiles

    table = Table(title="procedge targets")
    for column in ("target", "aliases", "backend", "precision", "budget ms", "input", "hardware"):
        table.add_column(column)
    for p in builtin_profiles().values():
        table.add_row(p.name, ", ".join(p.aliases), p.backend, p.precision, f"{p.latency_budget_ms:g}", str(p.input_size), p.hardware.name)
    Console(width=None if Console().is_terminal else 160).print(table)


@main.command()
@click.option("--target", required=True, help="Target profile name or alias (see `procedge targets`), or a profile .yaml file.")
@click.option("--teacher", default="tf_efficientnet_lite0", show_default=True, help="timm model name of the frozen teacher.")
@click.option("--teacher-weights", type=click.Path(path_type=Path), help="Teacher checkpoint (.safetensors, or .pth/.pt state dict). Default: the embedded ImageNet Lite0.")
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder tree: DIR/{train,val|test}/<class>/ or DIR/<class>/. Default: the embedded MNIST subset.")
@click.option("--student", help="timm student name; default: sized for the target.")
@click.option("--method", default="proc-kd", show_default=True, help="Distillation method.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (default: 5 on the embedded data, 30 otherwise).")
@click.option("--teacher-size", type=click.IntRange(16, 1024), help="Teacher input size in pixels.")
@click.option("--student-size", type=click.IntRange(16, 1024), help="Student input size in pixels (default: the target's, or 64 on the embedded data).")
@click.option("--augment/--no-augment", default=False, show_default=True, help="Random shift and flip (runs the teacher every step instead of caching it).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/<target>-<method>).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out (the old one stays until the new one completes).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
def distill(target, teacher, teacher_weights, data, student, method, epochs, teacher_size, student_size, augment, out, seed, overwrite, resume):
    """Distill a student for TARGET from the teacher on the task data (ProC-KD by default)."""
    from procedge.distill import distill as run_distill
    from procedge.distill import resolve_config
    from procedge.targets import resolve_target

    if overwrite and resume:
        raise ProcedgeError("--overwrite and --resume exclude each other; pick one")
    out = out or Path("runs") / f"{resolve_target(target).name}-{method}"
    if resume:
        run_distill(None, out, resume=True)
        return
    from procedge.distill import check_out_dir

    check_out_dir(out, overwrite)
    config, sizing = resolve_config(target, teacher, teacher_weights, data, student, method, epochs, seed, teacher_size, student_size,
                                    augment_data=augment)
    run_distill(config, out, sizing, overwrite=overwrite)
    click.echo(f"run written to {out}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory written by `procedge distill`.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True, help="Export format.")
@click.option("--precision", type=click.Choice(("fp32", "fp16", "int8")), help="Precision (default: fp32).")
@click.option("--calib-size", type=click.IntRange(min=1), help="INT8 calibration images from the training split (default: calibration/default.yaml).")
def export(run_dir, fmt, precision, calib_size):
    """Export the run's folded student (and the teacher, for comparison) to FORMAT."""
    from procedge.export import export_run

    export_run(run_dir, fmt, precision, calib_size)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory with exports.")
@click.option("--format", "formats", multiple=True, type=click.Choice(("pytorch",) + FORMATS[:-1]), help="Only these formats (repeatable). Default: every export found, plus PyTorch eager.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: the runtime's own choice).")
@click.option("--quick", is_flag=True, help="Shorter timing (50 runs / 0.5 s per row), for smoke tests.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), help="Exit with status 1 if a deployed-student row is below this held-out accuracy (0-1) or failed.")
def bench(run_dir, formats, threads, quick, as_json, min_accuracy):
    """Measure held-out accuracy and batch-1 latency of the student and the teacher on every backend."""
    from procedge.bench import TimingPolicy, bench_run
    from procedge.report import render, write_report
    from procedge.run import RunDir

    policy = TimingPolicy(warmup_runs=5, warmup_seconds=0.1, min_runs=50, min_seconds=0.5) if quick else TimingPolicy()
    report = bench_run(run_dir, list(formats) or None, policy, threads)
    run = RunDir(run_dir)
    write_report(report, run.bench_json, run.report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render(report)
        click.echo(f"report written to {run.report} and {run.bench_json}")
    if min_accuracy is not None:
        from procedge.report import rows_below

        below = rows_below(report, min_accuracy)
        if below:
            click.echo(f"error: below --min-accuracy {min_accuracy:g}: {'; '.join(below)}", err=True)
            sys.exit(1)
