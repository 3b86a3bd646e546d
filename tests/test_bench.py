import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from procedge.bench import TimingPolicy, measure_latency
from procedge.cli import main
from procedge.export import export_run
from procedge.run import RunDir


def test_latency_policy_counts_and_percentiles():
    def sleeper(x):
        time.sleep(0.001)

    stats = measure_latency(sleeper, np.zeros(1), TimingPolicy(warmup_runs=3, warmup_seconds=0.0, min_runs=30, min_seconds=0.05))
    assert stats["runs"] >= 30
    assert 1.0 <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["throughput_fps"] == pytest.approx(1000 / stats["mean_ms"])


@pytest.mark.slow
def test_bench_table_student_vs_teacher(trained_run):
    export_run(trained_run, "ort", "fp32")
    result = CliRunner().invoke(main, ["bench", "--run", str(trained_run), "--quick"])
    assert result.exit_code == 0, result.output
    run = RunDir(trained_run)
    report = json.loads(run.bench_json.read_text())
    rows = {(r["model"], r["format"]): r for r in report["rows"]}
    for model in ("student", "student_noaug", "teacher"):
        for fmt in ("pytorch", "onnx", "ort"):
            row = rows[(model, fmt)]
            assert row["status"] == "ok", row
            assert row["latency"]["p50_ms"] > 0 and row["latency"]["runs"] >= 50
    metrics = run.read_metrics()
    assert rows[("student", "ort")]["accuracy"] == pytest.approx(metrics["student_accuracy"], abs=0.005)
    assert rows[("teacher", "ort")]["accuracy"] == pytest.approx(metrics["teacher_probe_accuracy"], abs=0.005)
    assert rows[("student", "onnx")]["predicted_host_ms"] > 0
    assert {"cpu", "versions", "logical_cores"} <= set(report["device"])
    text = run.report.read_text()
    assert "| student | ort |" in text and "augmentation overhead" in text
    assert set(report["augmentation_overhead"]) >= {"onnx fp32", "ort fp32", "pytorch fp32"}


def test_overhead_is_measured_interleaved():
    from procedge.bench import measure_overhead

    def slow(x):
        time.sleep(0.002)

    def fast(x):
        time.sleep(0.001)

    result = measure_overhead(slow, fast, np.zeros(1), TimingPolicy(warmup_runs=2, min_runs=20, min_seconds=0.05))
    assert result["runs"] >= 20
    assert 30 < result["overhead_pct"] < 150
