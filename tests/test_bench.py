import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from procedge.bench import TimingPolicy, measure_latency
from procedge.cli import main
from procedge.export import export_run
from procedge.run import RunDir


def test_latency_policy_counts_percentiles_and_interleaves():
    calls = []

    def runner(name, seconds):
        def run(x):
            calls.append(name)
            time.sleep(seconds)

        return run

    policy = TimingPolicy(warmup_runs=3, warmup_seconds=0.0, min_runs=30, min_seconds=0.05)
    stats = measure_latency({"slow": (runner("slow", 0.002), np.zeros(1)), "fast": (runner("fast", 0.001), np.zeros(1))}, policy)
    for name in ("slow", "fast"):
        assert stats[name]["runs"] >= 30
        assert stats[name]["p50_ms"] <= stats[name]["p90_ms"] <= stats[name]["p99_ms"]
        assert stats[name]["throughput_fps"] == pytest.approx(1000 / stats[name]["mean_ms"])
    assert stats["slow"]["p50_ms"] > stats["fast"]["p50_ms"] >= 1.0
    rounds = calls[6:]  # after the warm-up: blocks of 3 settling + 50 timed calls, model after model
    assert rounds[:53] == ["slow"] * 53 and rounds[53:106] == ["fast"] * 53


@pytest.mark.slow
def test_bench_table_student_vs_teacher(trained_run):
    export_run(trained_run, "ort", "fp32")
    result = CliRunner().invoke(main, ["bench", "--run", str(trained_run), "--quick", "--min-accuracy", "0.5"])
    assert result.exit_code == 0, result.output
    run = RunDir(trained_run)
    report = json.loads(run.bench_json.read_text())
    rows = {(r["model"], r["format"], r["precision"]): r for r in report["rows"]}
    for model in ("student", "student_noaug", "teacher"):
        for fmt in ("pytorch", "onnx", "ort"):
            row = rows[(model, fmt, "fp32")]
            assert row["status"] == "ok", row
            assert row["latency"]["p50_ms"] > 0 and row["latency"]["runs"] >= 50
    metrics = run.read_metrics()
    assert rows[("student", "ort", "fp32")]["accuracy"] == pytest.approx(metrics["student_accuracy"], abs=0.005)
    assert rows[("teacher", "ort", "fp32")]["accuracy"] == pytest.approx(metrics["teacher_probe_accuracy"], abs=0.005)
    assert rows[("student", "onnx", "fp32")]["predicted_host_ms"] > 0
    assert {"cpu", "versions", "logical_cores"} <= set(report["device"])
    text = run.report.read_text()
    assert "| student | ort |" in text and "augmentation overhead" in text
    assert set(report["augmentation_overhead"]) >= {"onnx fp32", "ort fp32", "pytorch fp32"}



def test_min_accuracy_gate_names_the_rows_below():
    from procedge.report import rows_below

    report = {"rows": [
        {"model": "student", "format": "ort", "precision": "fp32", "status": "ok", "accuracy": 0.97},
        {"model": "student", "format": "ort", "precision": "int8", "status": "ok", "accuracy": 0.91},
        {"model": "student", "format": "openvino", "precision": "int8", "status": "failed", "accuracy": None},
        {"model": "teacher", "format": "ort", "precision": "int8", "status": "ok", "accuracy": 0.5},
    ]}
    assert rows_below(report, 0.95) == ["ort int8 0.9100", "openvino int8 failed"]
    assert rows_below({"rows": report["rows"][:1]}, 0.95) == []


def test_jetson_power_mode_is_recorded(tmp_path):
    from procedge.bench import jetson_state

    model = tmp_path / "model"
    model.write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    nvpmodel = tmp_path / "nvpmodel"
    nvpmodel.write_text("#!/bin/sh\necho 'NV Power Mode: 15W'\necho 0\n")
    nvpmodel.chmod(0o755)
    assert jetson_state(model, str(nvpmodel)) == {"model": "NVIDIA Jetson Orin Nano Developer Kit", "power_mode": "15W"}
    assert jetson_state(model, str(tmp_path / "absent"))["power_mode"].startswith("unknown (nvpmodel -q failed")
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    assert jetson_state(model, str(nvpmodel)) is None
    assert jetson_state(tmp_path / "no-device-tree") is None  # an x86 machine


def test_report_puts_the_student_beside_the_student_alone_and_the_probe(tmp_path):
    from procedge.bench import distillation_record
    from procedge.errors import ProcedgeError
    from procedge.report import distillation_lines

    def fake_run(name, method, accuracy, labelled, unlabeled):
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        run.student.write_bytes(b"")
        run.metrics.write_text(json.dumps({"method": method, "student_accuracy": accuracy, "teacher_probe_accuracy": 0.94,
                                           "train_images": labelled, "unlabeled_images": unlabeled}))
        return run

    distilled, alone = fake_run("kd", "proc-kd", 0.90, 100, 3900), fake_run("alone", "none", 0.70, 100, 0)
    record = distillation_record(distilled, alone.path)
    lines = distillation_lines({"distillation": record})
    assert lines[0] == "proc-kd student: 90.00% held-out (-4.0 pts under the probe), trained on 100 labelled + 3900 unlabelled images"
    assert lines[1].startswith("none student (") and lines[1].endswith("70.00% held-out (-24.0 pts under the probe), trained on 100 labelled images")
    assert lines[2] == "teacher linear probe: 94.00% held-out"
    above = fake_run("above", "proc-kd", 0.955, 100, 3900)
    assert distillation_lines({"distillation": distillation_record(above)})[0].startswith("proc-kd student: 95.50% held-out (+1.5 pts over the probe)")
    with pytest.raises(ProcedgeError, match="does not exist"):
        distillation_record(distilled, tmp_path / "missing")
    alone.metrics.unlink()
    with pytest.raises(ProcedgeError, match="has no metrics.json"):
        distillation_record(distilled, alone.path)
    assert distillation_lines({"distillation": None}) == []


def test_cpu_model_names_this_machine():
    from procedge.bench import cpu_model

    name = cpu_model()
    assert name and "\n" not in name


@pytest.mark.slow
def test_a_method_without_augmentation_exports_and_benches_one_student(tmp_path):
    """`none` deploys its student as trained: one student graph, exported, benched and reported once, no overhead row."""
    from procedge.distill import distill, resolve_config

    config, sizing = resolve_config("intel-cpu", student="resnet10t", method="none", epochs=1, teacher_size=32, student_size=32,
                                    teacher_views=0, labels_per_class=20)
    distill(config, tmp_path / "none", sizing)
    run = RunDir(tmp_path / "none")
    assert run.variants() == ("student", "teacher") and "student_noaug_accuracy" not in run.read_metrics()
    manifest = json.loads((export_run(run.path, "ort", "fp32") / "manifest.json").read_text())
    assert set(manifest["files"]) == {"student", "teacher"}
    assert sorted(p.name for p in run.format_dir("onnx", "fp32").glob("*.onnx")) == ["student.onnx", "teacher.onnx"]
    result = CliRunner().invoke(main, ["bench", "--run", str(run.path), "--quick"])
    assert result.exit_code == 0, result.output
    report = json.loads(run.bench_json.read_text())
    assert {r["model"] for r in report["rows"]} == {"student", "teacher"} and not report["augmentation_overhead"]


def test_bench_heads_each_backend_with_the_trade_and_records_it_in_sizing(tmp_path):
    """The deployed student's speedup and points against the teacher of the same format and precision, the asked and
    predicted speedup from sizing.json, and a flag where the measured speedup is below the asked one."""
    from procedge.bench import BenchRow, _trade
    from procedge.report import headlines

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.sizing.write_text(json.dumps({"asked_speedup": 4.0, "predicted_speedup": 5.5}))

    def row(model, fmt, accuracy, p50):
        return BenchRow(model, fmt, "fp32", accuracy=accuracy, latency={"p50_ms": p50})

    rows = [row("student", "openvino", 0.841, 2.1), row("teacher", "openvino", 0.879, 13.7),
            row("student", "ort", 0.92, 5.0), row("teacher", "ort", 0.90, 15.0)]
    _trade(rows, run)
    assert rows[0].speedup == pytest.approx(13.7 / 2.1) and rows[0].points_vs_probe == pytest.approx(-3.8)
    assert (rows[0].asked_speedup, rows[0].predicted_speedup) == (4.0, 5.5) and rows[1].speedup is None
    assert json.loads(run.sizing.read_text())["measured_speedup"] == {"openvino fp32": pytest.approx(13.7 / 2.1), "ort fp32": 3.0}
    lines = headlines({"rows": [r.__dict__ for r in rows]})
    assert lines[0] == "openvino fp32: student 6.5x faster than the teacher (2.10 vs 13.70 ms p50), 84.1% vs probe 87.9% (-3.8 pts)"
    assert lines[1] == "ort fp32: student 3.0x faster than the teacher (5.00 vs 15.00 ms p50), 92.0% vs probe 90.0% (+2.0 pts); BELOW the asked 4x"
