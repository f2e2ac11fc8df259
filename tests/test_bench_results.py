"""bench/results.py: a benchmark's printout lands in bench/results/<topic>-<cpu>-<date>.md with what makes its
figures comparable (commit, CPU flags, load)."""
import datetime
import os
import subprocess
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


def test_a_checkout_writes_to_its_own_bench_results():
    assert results.default_folder() == Path(results.__file__).resolve().parent / "results"  # tracked with the code


@pytest.mark.subprocess
def test_bench_loss_writes_one_file_with_its_children_measuring_apart(tmp_path):
    """bench loss measures each loss in a child process; the children print JSON and write no file of their own
    (a child's "results:" line after its JSON had broken the parent whenever files were on)."""
    out = subprocess.run([sys.executable, "-m", "c3dhash.cluster.cli", "bench", "loss", "--", "--sizes", "16",
                          "--repeats", "1", "--naive-max-gib", "0.01"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "C3DHASH_BENCH_RESULTS": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    (written,) = tmp_path.iterdir()
    assert f"results: {written}" in out.stdout and "| 16 |" in written.read_text()


HELP_ALL = """
import contextlib, io, sys
from c3dhash.cluster.cli import main
from c3dhash.cluster.cmd_bench import BENCHES
for name in BENCHES:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main(["bench", name, "--", "--help"])
        print(name, "returned without its help")
    except SystemExit as exc:
        print(name, exc.code, "usage:" in out.getvalue())
    except Exception as exc:
        print(name, repr(exc)[:300])
"""


@pytest.mark.subprocess
def test_every_shipped_benchmark_imports_and_prints_its_help():
    """`c3dhash bench NAME -- --help` for every NAME, in one process: a benchmark whose imports rotted (a renamed
    function, a test helper the wheel does not ship) fails here, not on a user's machine."""
    from c3dhash.cluster.cmd_bench import BENCHES
    out = subprocess.run([sys.executable, "-c", HELP_ALL], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "C3DHASH_BENCH_RESULTS": "off"})
    assert out.stdout.splitlines() == [f"{name} 0 True" for name in BENCHES], out.stdout + out.stderr[-2000:]


def recorded_in(folder):
    return results.recorded("demo", folder)
