"""Tests of the benchmark bookkeeping (the timings themselves are measured by ``make bench``, never in tests)."""

from __future__ import annotations

import pytest

from diffusionbert.apps.bench import (
    FAMILIES,
    StepTiming,
    bench_families,
    combined,
    families_report,
    training_flops,
    training_report,
)
from diffusionbert.apps.bench_memory import SoakPoint, bench_memory, is_flat, memory_report
from diffusionbert.cli import main
from diffusionbert.errors import ConfigError
from diffusionbert.testing import tiny_model


def test_useful_flops_leave_out_the_last_layers_unread_outputs() -> None:
    model = tiny_model()
    base = model.backbone.base_model
    encoder = sum(p.numel() for p in base.parameters()) - model.get_input_embeddings().weight.numel()
    vocab, hidden = model.get_output_embeddings().weight.shape
    head = vocab * hidden + hidden * hidden
    assert training_flops(model, 10, 10) == 6.0 * 10 * (encoder + head)  # every token read by the head
    last = base.encoder.layer[-1]
    unread = sum(p.numel() for p in last.parameters()) - sum(
        p.numel() for m in (last.attention.self.key, last.attention.self.value) for p in m.parameters()
    )
    assert training_flops(model, 10, 4) == 6.0 * (encoder * 10 - unread * 6 + head * 4)


def test_rounds_combine_as_total_work_over_total_time() -> None:
    rounds = [StepTiming("ours", 1.0, 100.0, 10.0), StepTiming("ours", 3.0, 200.0, 20.0)]
    total = combined(rounds)
    assert total.seconds_per_step == 2.0
    assert total.real_tokens_per_s == (100.0 * 1 + 200.0 * 3) / 4
    assert total.flops_per_s == (10.0 * 1 + 20.0 * 3) / 4
    naive = [StepTiming("naive", 10.0, 10.0, 1.0), StepTiming("naive", 20.0, 20.0, 1.0)]
    report = training_report(naive, rounds, peak=100.0, settings="settings")
    assert "lowest round: **10.0×**; per round: 10.0×, 10.0×" in report
    assert "all rounds together: 10.5×" in report  # 175 ÷ ((10·10 + 20·20) / 30)


def test_bench_rejects_zero_rounds() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--rounds", "0"])
    assert exit_info.value.code == 2


def test_every_family_runs_its_training_step_and_a_gaussian_family_its_samplers(tiny_backbone, tiny_texts):
    """The family benchmark on the tiny backbone, one timed step: every family's step and report row."""
    timings = bench_families(
        tiny_texts["train"], backbone=str(tiny_backbone), num_sentences=16, batch_size=8, steps=1,
        num_samples=2, length=6, sample_steps=3,
    )  # fmt: skip
    assert [t.family for t in timings] == list(FAMILIES)
    assert all(t.seconds_per_step > 0 and t.real_tokens_per_s > 0 for t in timings)
    gaussian = {t.family: sorted(t.samples_per_s) for t in timings if t.samples_per_s}
    assert gaussian == {"diffusion_lm": ["ancestral", "clamped"], "plaid": ["ancestral", "clamped"]}
    report = families_report(timings, "settings")
    assert (
        "| diffusionbert | spindle |" in report and "| plaid | learned |" in report and "| 1.00× |" in report
    )
    assert "| diffusion_lm | clamped | 3 |" in report


def test_the_soak_row_reads_each_steps_cycle_peak_from_a_real_run(tiny_config) -> None:
    """The soak run trains the config with one log record per step; each row is its cycle's peak."""
    path, _ = tiny_config()
    points = bench_memory(path, (10, 20))
    assert [p.step for p in points] == [10, 20]
    assert all(10 < p.rss_mb < 2**20 for p in points)
    report = memory_report(points, "settings")
    assert f"| 20 | {points[1].rss_mb:,.0f} MiB |" in report
    assert ("**yes**" in report) == is_flat(points)


def test_memory_is_flat_only_when_every_later_peak_is_near_the_first() -> None:
    assert is_flat([SoakPoint(50, 1000.0), SoakPoint(500, 1090.0), SoakPoint(2000, 950.0)])
    assert not is_flat([SoakPoint(50, 1000.0), SoakPoint(500, 1050.0), SoakPoint(2000, 1150.0)])


@pytest.mark.parametrize("steps", [(), (5, 50), (50, 20)])
def test_soak_steps_must_rise_from_one_window(tiny_config, steps) -> None:
    path, _ = tiny_config()
    with pytest.raises(ConfigError, match="soak steps"):
        bench_memory(path, steps)


def test_bench_rejects_a_soak_step_list_that_does_not_rise() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--data", "x", "--soak-steps", "500,50"])
    assert exit_info.value.code == 2


def test_one_section_measured_again_replaces_its_own_and_keeps_the_others(tiny_config, tmp_path) -> None:
    """``bench --only memory``: the soak section is measured and written in place of the page's old one; the
    other sections (not measured: no demo model is needed) stay as they were, in their order."""
    path, _ = tiny_config()
    page = tmp_path / "benchmarks.md"
    old = "# Benchmarks\n\nold intro\n\n## Training throughput\n\nold training\n\n"
    old += "## Memory over a long training run (soak)\n\nold soak\n\n## Chat\n\nold chat\n"
    page.write_text(old, encoding="utf-8")
    soak = ["--soak-config", str(path), "--soak-steps", "10,20"]
    code = main(
        [
            "bench",
            "--data",
            "x",
            "--only",
            "memory",
            *soak,
            "--checkpoint",
            str(tmp_path / "m"),
            "--out",
            str(page),
        ]
    )
    assert code == 0
    text = page.read_text(encoding="utf-8")
    assert text.index("old training") < text.index("| 20 |") < text.index("old chat")
    assert "old soak" not in text and "old intro" not in text and text.count("## ") == 3
    assert main(["bench", "--data", "x", "--only", "memroy", "--out", str(page)]) == 2
    assert page.read_text(encoding="utf-8") == text  # a bad section name writes nothing
