"""The CPU (dicap.cpu): read from /proc/cpuinfo, and torch's kernels pinned to AVX2 where the
CPU has it, so two x86 CPUs compute the same numbers."""

from __future__ import annotations

import pytest

from cpuinfo_texts import NEOVERSE, SAPPHIRE_RAPIDS, ZEN3, ZEN5
from dicap import cpu as cpu_module
from dicap.cpu import KERNEL_PINS, KERNELS_ENV, SIMD_FLAGS, cpu, cpu_from_cpuinfo, kernels, pin_kernels, pinned
from dicap.report.reproduction import same_cpu


def test_the_cpu_is_read_from_cpuinfo():
    zen3 = cpu_from_cpuinfo(ZEN3)
    assert (zen3["vendor"], zen3["family"], zen3["model"], zen3["model_name"]) == ("AuthenticAMD", 25, 1, "AMD EPYC")
    assert {f for f, present in zen3["simd"].items() if present} == {"avx2", "fma"}
    spr = cpu_from_cpuinfo(SAPPHIRE_RAPIDS)
    assert (spr["vendor"], spr["family"], spr["model"]) == ("GenuineIntel", 6, 143)
    assert all(spr["simd"].values()) and set(spr["simd"]) == set(SIMD_FLAGS)
    arm = cpu_from_cpuinfo(NEOVERSE)
    assert (arm["vendor"], arm["family"], arm["model"], arm["model_name"]) == ("0x41", 8, 0xD0C, None)
    assert not any(arm["simd"].values())
    assert cpu_from_cpuinfo("") == {"vendor": None, "family": None, "model": None, "model_name": None, "simd": {}}


def test_without_cpuinfo_the_name_comes_from_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_module.platform, "processor", lambda: "arm")
    assert cpu(tmp_path / "absent")["model_name"] == "arm" and same_cpu({"cpu": cpu(tmp_path / "absent")}, {"cpu": cpu(tmp_path / "absent")}) is None
    (tmp_path / "cpuinfo").write_text(SAPPHIRE_RAPIDS)
    assert cpu(tmp_path / "cpuinfo") == cpu_from_cpuinfo(SAPPHIRE_RAPIDS)




@pytest.mark.parametrize("text", [ZEN3, ZEN5, SAPPHIRE_RAPIDS])
@pytest.mark.parametrize("choice", [None, "", "avx2", " AVX2 "])
def test_every_x86_cpu_with_avx2_is_pinned(text, choice):
    env = {} if choice is None else {KERNELS_ENV: choice}
    assert pin_kernels(env, cpu_from_cpuinfo(text)) is True
    assert kernels(env) == KERNEL_PINS and pinned({"kernels": kernels(env)})


@pytest.mark.parametrize("text", [NEOVERSE, "", ZEN3.replace(" avx2", ""), ZEN3.replace(" fma", "")])
def test_a_cpu_without_avx2_is_left_to_torch(text):
    """ATen trusts ATEN_CPU_CAPABILITY=avx2 without checking the CPU: pinned there, it would crash."""
    env: dict[str, str] = {}
    assert pin_kernels(env, cpu_from_cpuinfo(text)) is False and env == {}
    assert kernels(env) == dict.fromkeys(KERNEL_PINS) and not pinned({"kernels": kernels(env)})


@pytest.mark.parametrize("choice", ["native", "NATIVE", " native"])
def test_native_opts_out(choice):
    env = {KERNELS_ENV: choice}
    assert pin_kernels(env, cpu_from_cpuinfo(ZEN5)) is False and env == {KERNELS_ENV: choice}


@pytest.mark.parametrize("choice", ["avx512", "nativ", "avx-2", "1", "default"])
def test_any_other_choice_is_refused_by_name(choice):
    with pytest.raises(ValueError, match=f"^{KERNELS_ENV}='{choice}': must be one of avx2, native"):
        pin_kernels({KERNELS_ENV: choice}, cpu_from_cpuinfo(ZEN5))


@pytest.mark.parametrize("name", sorted(KERNEL_PINS))
def test_a_variable_the_user_set_is_kept_and_the_record_says_so(name):
    env = {name: "something else"}
    assert pin_kernels(env, cpu_from_cpuinfo(ZEN5)) is True
    assert env[name] == "something else" and kernels(env)[name] == "something else"
    assert not pinned({"kernels": kernels(env)})


def test_an_old_record_without_kernels_is_not_pinned():
    assert not pinned(None) and not pinned({}) and not pinned({"cpu": cpu_from_cpuinfo(ZEN3)})


def test_a_bad_choice_stops_dicap_with_one_line(monkeypatch):
    """runtime pins the kernels when `dicap` starts; a value it cannot take ends the process there."""
    import importlib

    from dicap import runtime

    monkeypatch.setenv(KERNELS_ENV, "nativ")
    try:
        with pytest.raises(SystemExit, match=f"^dicap: {KERNELS_ENV}='nativ': must be one of avx2, native \\(or unset\\)$"):
            importlib.reload(runtime)
    finally:
        monkeypatch.delenv(KERNELS_ENV)
        importlib.reload(runtime)
