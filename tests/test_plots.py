"""The reports' pictures: real PNGs of the right size that are not blank."""

import numpy as np
from PIL import Image

from procedge.bench import TimingPolicy, bench_run
from procedge.report import write_report
from procedge.run import RunDir


def assert_real_png(path, min_width=400, min_height=300):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= min_width and im.height >= min_height, (im.format, im.size)
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.005  # lines and text, not a blank canvas


def test_distill_draws_the_training_curves_and_bench_the_accuracy_latency_plot(trained_run):
    run = RunDir(trained_run)
    assert_real_png(run.training_plot)
    report = bench_run(trained_run, ["pytorch"], TimingPolicy(warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.0))
    write_report(report, run.bench_json, run.report, run.bench_plot, run.training_plot)
    assert_real_png(run.bench_plot)
    text = run.report.read_text()
    assert f"]({run.bench_plot.name})" in text and f"]({run.training_plot.name})" in text
