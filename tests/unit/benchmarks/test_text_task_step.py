"""benchmarks/text_task_step.py --tiny: what it reports must be what it measured."""

from __future__ import annotations


def test_text_task_step_tiny_agrees_with_itself_on_the_cpu_and_times_both_paths(single_thread, capsys):
    """benchmarks/text_task_step.py --tiny: on a CPU the 'device' is the CPU, so the two trainings
    agree exactly; both paths are timed on the same texts."""
    import text_task_step

    result = text_task_step.main(["--tiny", "--texts", "64", "--answers", "4", "--batch", "8", "--steps", "1"])
    assert result["device"] == "cpu" and result["max_context_difference"] == 0 and result["max_loss_difference"] == 0
    assert result["texts"] == 64 and result["subset_s"] > 0 and result["full_s"] > 0
    assert set(result["learners"].values()) == {"ok"}, result["learners"]
    assert "s/step" in capsys.readouterr().out
