"""`benchmarks.bench_precision --quick`: runs end to end on the tiny model and writes the documented layout."""
import json

from benchmarks import bench_precision


def test_quick_benchmark_writes_f32_and_bf16_side_by_side(tmp_path):
    bench_precision.main(["--quick", "--out-dir", str(tmp_path)])
    payload = json.loads((tmp_path / "precision_cpu_quick.json").read_text())
    for block in ("langevin_step", "cd_iteration", "nae_iteration", "convae_nf_generation"):
        assert payload[block]["f32_ms"] > 0 and payload[block]["bf16_ms"] > 0
        assert len(payload[block]["load_average_1min"]) == 2
    step = payload["langevin_step"]
    assert "paper_code_ms" in step and (step["paper_code_ms"] is not None or step["paper_code_reason"])
    assert step["programs"]["bf16"]["dots"].get("bf16,bf16->f32", 0) > 0
    assert "bf16,bf16->f32" not in step["programs"]["f32"]["dots"]
    assert payload["cd_iteration"]["state_float_dtypes"] == {"f32": ["float32"], "bf16": ["float32"]}
    assert set(payload["matmul"]) == {"f32_gflops_per_s", "bf16_gflops_per_s"}
    assert payload["meta"]["cpu"] and payload["meta"]["load_average_1min"] >= 0
    assert (tmp_path / "precision_cpu_quick.md").read_text().startswith("# f32 vs bf16")
