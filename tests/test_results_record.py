"""A benchmark run with --record writes what it printed into its own section of RESULTS.md, with the command (without
--record), date, machine and load; a rerun replaces that section and keeps the others."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RECORDER = Path(__file__).resolve().parent.parent / "benchmarks" / "results_record.py"


@pytest.fixture(scope="module")
def results_record():
    spec = importlib.util.spec_from_file_location("results_record_under_test", RECORDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_main_records_the_printed_figures_and_a_rerun_replaces_them(results_record, tmp_path, monkeypatch,
                                                                        capsys):
    results = tmp_path / "RESULTS.md"
    results_record.record_section("other", "kept", command="python other.py", path=results)
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--fast", "--record"])
    for figure in ("1.5 s", "2.5 s"):
        results_record.run_main("x: speed", lambda figure=figure: print(f"time {figure}"), path=results)
    text = results.read_text()
    assert text.count("## x: speed") == 1 and "time 2.5 s" in text and "time 1.5 s" not in text
    assert "- command: `python benchmarks/x.py --fast`" in text and "- machine: " in text and "before: load" in text
    assert "## other" in text and "kept" in text
    assert "time 2.5 s" in capsys.readouterr().out  # still printed as usual


def test_run_main_without_record_writes_nothing(results_record, tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py"])
    results_record.run_main("x: speed", lambda: print("time 1 s"), path=results)
    assert not results.exists()


def test_run_main_records_nothing_when_the_benchmark_fails(results_record, tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--record"])

    def failing():
        print("half")
        raise SystemExit("failed")

    with pytest.raises(SystemExit):
        results_record.run_main("x: speed", failing, path=results)
    assert not results.exists()


def test_every_script_that_records_accepts_the_option():
    scripts = [path for path in RECORDER.parent.glob("*.py") if "results_record.run_main(" in path.read_text()]
    assert len(scripts) >= 10
    for path in scripts:  # its own option, or the shared parser of the CPU step benchmarks, which has it
        text = path.read_text()
        assert 'add_argument("--record"' in text or "step_shape_parser(__doc__)" in text, path.name
