import pytest

from procedge.errors import ProcedgeError
from procedge.targets import builtin_profiles, load_profile, resolve_target

REQUIRED = {"jetson-orin-nano", "jetson-agx-orin", "intel-cpu", "arm64", "nvidia-gpu"}


def test_builtin_profiles_cover_every_target_family():
    profiles = builtin_profiles()
    assert REQUIRED <= set(profiles)
    assert {profiles[n].backend for n in REQUIRED} == {"trt", "openvino", "ort"}
    for p in profiles.values():
        assert p.latency_budget_ms > 0 and p.hardware.peak_gflops["fp32"] > 0


def test_mission_name_resolves_to_a_jetson_orin_profile():
    assert resolve_target("jetson-orin").name.startswith("jetson-orin")


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ProcedgeError, match="intel-cpu"):
        resolve_target("jetson-nano-2gb")


def test_bad_profile_error_names_the_field(tmp_path):
    text = (resolve_target("intel-cpu").model_dump_json())
    import json

    data = json.loads(text)
    data["hardware"]["memory_bandwidth_gbs"] = -1
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProcedgeError, match="hardware.memory_bandwidth_gbs"):
        load_profile(path)


def test_profile_file_with_unknown_field_is_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\nbakend: ort\n")
    with pytest.raises(ProcedgeError, match="target profile"):
        resolve_target(str(path))
