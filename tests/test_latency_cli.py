"""The latency options of ``prune``: bad input is one line and exit 2; --round-to auto picks from
a (stubbed) timing table and caches it; a latency target with a saved table plans without timing
layers and writes what it measured."""
from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import main as entry  # noqa: E402
from core.metrics import widths  # noqa: E402

FACTORY = os.path.join(ROOT, "tests", "models", "demo_factory.py")
BASE = ["prune", f"{FACTORY}:make", "--trust", "--input-shape", "1,3,32,32"]


def run(args, capsys):
    rc = entry.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("extra,needle", [
    (["--target-latency", "1.5"], "target latency must be in [0, 1)"),
    (["--target-latency", "abc"], "'abc' is not a number"),
    (["--target-latency", "0.5", "--target-flops", "0.5"], "not allowed with argument"),
    (["--round-to", "zero"], "'zero' is not an integer"),
    (["--round-to", "0"], "a positive integer or auto"),
    (["--threads", "0"], "must be a positive integer"),
    (["--latency-table", "t.json"], "--latency-table needs --target-latency"),
    (["--target-latency", "0.3", "--latency-table", "t.json", "--no-latency"], "drop --no-latency"),
])
def test_bad_latency_options_are_one_line_and_exit_2(extra, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(BASE + extra, capsys)
    assert rc == 2 and err.count("\n") == 1 and needle in err, err


def test_a_table_that_is_not_one_is_refused(capsys, tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text("[1, 2]")
    rc, _, err = run(BASE + ["--target-latency", "0.3", "--latency-table", str(bad)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "latency table" in err, err


def stub_times():
    """Multiples of 8 are twice as fast per channel; 16 and 32 no better than 8."""
    out = {}
    for m in widths.MULTIPLES:
        out[m] = {widths.rounded(t, m): widths.rounded(t, m) * (0.5 if m >= 8 else 1.0)
                  for t in widths.TARGETS}
    return out


def test_round_to_auto_chooses_from_the_timing_table():
    pick, score = widths.choose_multiple(stub_times())
    assert pick == 8 and score[1] == pytest.approx(1.0) and score[8] == pytest.approx(0.5)
    flat = {m: {widths.rounded(t, m): float(widths.rounded(t, m)) for t in widths.TARGETS}
            for m in widths.MULTIPLES}
    assert widths.choose_multiple(flat)[0] == 1  # nothing gained: keep the finest multiple


def test_round_to_auto_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(widths.CACHE_ENV, str(tmp_path))
    calls = []

    def bench(dev, threads):
        calls.append((str(dev), threads))
        return stub_times()
    m1, f1 = widths.best_multiple("cpu", 1, bench=bench)
    m2, f2 = widths.best_multiple("cpu", 1, bench=bench)
    assert m1 == m2 == 8 and len(calls) == 1 and not f1["cached"] and f2["cached"]
    assert json.loads((tmp_path / "widths.json").read_text())
    widths.best_multiple("cpu", 2, bench=bench)  # another thread count is another device key
    assert len(calls) == 2


def test_cli_round_to_auto_and_latency_target_with_saved_table(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(widths.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(widths, "bench_widths", lambda dev, threads: stub_times())
    from core.metrics import tables
    monkeypatch.setattr(tables, "_time", lambda layer, x, tick, runs: float(
        layer.weight.numel() * (x[0, 0].numel() if x.dim() > 2 else 1)) * 1e-6)
    table, rep = tmp_path / "t.json", tmp_path / "r.json"
    rc, out, err = run(BASE + ["--target-latency", "0.3", "--round-to", "auto", "--threads", "1",
                               "--latency-table", str(table), "--report", str(rep)], capsys)
    assert rc == 0, err
    assert "round-to auto: multiples of 8" in out and "tables estimated" in out
    r = json.loads(rep.read_text())
    assert r["round_to_auto"]["multiple"] == 8 and r["settings"]["round_to"] == 8
    assert r["after"]["latency_threads"] == 1 and r["after"]["latency_q1_ms"] is not None
    assert json.loads(table.read_text())["layers"]
    # planning again from the saved table: no layer is timed
    monkeypatch.setattr(tables, "measure_table", lambda *a, **k: pytest.fail("re-measured"))
    rc, out, err = run(BASE + ["--target-latency", "0.3", "--threads", "1", "--latency-table",
                               str(table), "--no-verify"], capsys)
    assert rc == 0, err


def test_an_onnx_output_is_timed_against_the_original_in_onnxruntime(capsys, tmp_path):
    """The exported file's onnxruntime time stood alone ("onnxruntime: 19.81 ms"): nothing to
    compare it with. The original is exported the same way and both run in turns."""
    pytest.importorskip("onnxruntime")
    import json
    out = tmp_path / "demo.onnx"
    rc = entry.main(["prune", "demo", "--ratio", "0.5", "--no-verify", "-o", str(out),
                     "--report", str(tmp_path / "r.json")])
    so, err = capsys.readouterr()
    assert rc == 0, err
    [line] = [ln for ln in so.splitlines() if ln.startswith("onnxruntime:")]
    assert "->" in line and ("faster" in line or "slower" in line), line
    rep = json.loads((tmp_path / "r.json").read_text())["onnx_latency"]
    assert rep["before"]["runs"] == rep["after"]["runs"] > 0 and rep["speedup"] > 0
    assert sorted(os.listdir(tmp_path)) == ["demo.onnx", "r.json"]  # the original's file is gone
