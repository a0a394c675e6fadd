"""The package's shape (docs/CONTRACTS.md): module sizes and imports that run one way. Reads the sources only."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxebm"
MAX_MODULE_LINES = 450
MAX_SCRIPT_LINES = 250
# Each system's experiment modules; jet_samples, reporting, entry and learning_curve are shared.
SYSTEMS = {
    "ebm": ("ebm", "ebm_report", "generation_study"),
    "ebm_clf": ("ebm_clf", "ebm_clf_data", "ebm_clf_report"),
    "nae": ("nae", "nae_data", "nae_eval", "nae_report"),
    "jetnet_bench": ("jetnet_bench", "jetnet_bench_data", "jetnet_bench_eval", "jetnet_bench_report"),
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    """Absolute names a module imports (``from a import b`` gives ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (PACKAGE / package).rglob("*.py"))


def test_modules_and_scripts_stay_small():
    long_modules = {module_name(p): n for p in PACKAGE.rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    long_scripts = {p.name: n for p in (ROOT / "experiments").glob("*.py")
                    if (n := len(p.read_text().splitlines())) > MAX_SCRIPT_LINES}
    assert not long_modules and not long_scripts, (long_modules, long_scripts)


@pytest.mark.parametrize("packages, forbidden", [
    (("models", "sampling"), ("jaxebm.data", "jaxebm.train", "jaxebm.runs", "jaxebm.experiments")),
    (("train",), ("jaxebm.runs", "jaxebm.experiments")),
    (("runs",), ("jaxebm.experiments", "jaxebm.train")),
], ids=["models-sampling", "train", "runs"])
def test_imports_run_one_way(packages, forbidden):
    upward = {module_name(p): sorted(n for n in imported(p) if n.startswith(forbidden)) for p in modules(*packages)}
    assert not {m: names for m, names in upward.items() if names}


def test_no_training_model_or_sampling_code_imports_a_report():
    reports = {module_name(p): sorted(n for n in imported(p) if n.rsplit(".", 1)[-1].endswith("_report"))
               for p in modules("train", "models", "sampling")}
    assert not {m: names for m, names in reports.items() if names}


def test_reports_only_draw_and_format():
    """A ``*_report`` module runs no model: it imports no jax, model, sampler, step or score code (reading the
    metrics log is allowed), so what it shows was computed by evaluation."""
    computing = ("jaxebm.models", "jaxebm.sampling", "jaxebm.inference", "jaxebm.train")
    offenders = {module_name(p): sorted(n for n in imported(p) if n.split(".")[0] == "jax" or (
                     n.startswith(computing) and not n.startswith("jaxebm.train.monitor")))
                 for p in PACKAGE.rglob("*_report.py")}
    assert not {m: names for m, names in offenders.items() if names}


def test_no_system_imports_another_systems_experiment_modules():
    owner = {f"jaxebm.experiments.{name}": system for system, names in SYSTEMS.items() for name in names}
    crossing = {}
    for system, names in SYSTEMS.items():
        for name in names:
            paths = [PACKAGE / "experiments" / f"{name}.py"] + sorted((PACKAGE / "experiments" / name).glob("*.py"))
            for path in filter(Path.exists, paths):
                others = {n for n in imported(path) for prefix, s in owner.items()
                          if s != system and (n == prefix or n.startswith(prefix + "."))}
                if others:
                    crossing[module_name(path)] = sorted(others)
    assert not crossing
