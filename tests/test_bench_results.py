"""bench/results.py: a benchmark's printout lands in bench/results/<topic>-<cpu>-<date>.md with what makes its
figures comparable (commit, CPU flags, load)."""
import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import results  # noqa: E402


def test_recorded_tees_the_printout_into_a_file_with_the_machine(tmp_path, capsys):
    with recorded_in(tmp_path) as path:
        print("top-k 1.23 Gcodes/s")
    assert capsys.readouterr().out.startswith("top-k 1.23 Gcodes/s\n")  # still printed
    text = path.read_text()
    model, flags = results.cpu()
    assert path.name == f"demo-{results.cpu_slug(model)}-{datetime.date.today().isoformat()}.md"
    for line in ("- commit: ", f"- cpu: {model}", "- load average before: ", "- load average after: "):
        assert line in text, line
    assert all(f in text for f in flags)
    assert text.rstrip().endswith("```\ntop-k 1.23 Gcodes/s\n```")
    with recorded_in(tmp_path) as second:
        pass
    assert second.name.endswith("-2.md")  # a second run of the day keeps the first


def test_a_failed_run_is_written_and_marked(tmp_path):
    with pytest.raises(RuntimeError), recorded_in(tmp_path) as path:
        print("half")
        raise RuntimeError("boom")
    assert "the run FAILED" in path.read_text()


@pytest.mark.parametrize("code", [0, 2])
def test_help_or_an_argument_error_writes_no_file_but_a_failed_run_does(tmp_path, code):
    with pytest.raises(SystemExit), recorded_in(tmp_path) as path:
        raise SystemExit(code)  # what argparse raises for --help (0) and p.error (2): nothing was measured
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(SystemExit), recorded_in(tmp_path) as path:
        print("half")
        raise SystemExit(1)
    assert "the run FAILED" in path.read_text()


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("C3DHASH_BENCH_RESULTS", "off")
    with results.recorded("demo") as path:
        print("x")
    assert path is None


@pytest.mark.parametrize("model, slug", [("AMD EPYC 9R14 96-Core Processor", "amd-epyc-9r14"),
                                         ("Intel(R) Xeon(R) Platinum 8488C", "intel-xeon-platinum-8488c"),
                                         ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "intel-core-i7-8700")])
def test_cpu_slug(model, slug):
    assert results.cpu_slug(model) == slug


def recorded_in(folder):
    return results.recorded("demo", folder)
