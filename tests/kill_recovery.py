"""The kill-recovery check shared by the experiments that keep a best checkpoint (ebm: tests/test_kill_recovery.py,
nae: tests/nae/test_nae_kill_recovery.py, one file each so that the two run on different test workers): a run
killed (SIGKILL) during the write of its best checkpoint, then run again with the same command, ends with the
answer of an uninterrupted run: the same best checkpoints, the same selected step, the same results."""
import json
import os
import signal
import subprocess
import sys
import time

from jaxebm.cli import main

# Runs `jaxebm argv[2:]`; the write of best/<argv[1]> starts (Orbax's temporary directory appears) and stalls
# there until the process is killed, as a kill in the middle of that write would leave it.
_STALLED_BEST_WRITE = """
import os, sys, time
import orbax.checkpoint as ocp
from jaxebm.cli import main
STEP, original = int(sys.argv[1]), ocp.CheckpointManager.save
def save(self, step, *args, **kwargs):
    if os.path.basename(str(self.directory)) == "best" and step == STEP:
        os.makedirs(os.path.join(str(self.directory), f"{step}.orbax-checkpoint-tmp-1", "state"))
        time.sleep(600)
    return original(self, step, *args, **kwargs)
ocp.CheckpointManager.save = save
sys.exit(main(sys.argv[2:]))
"""

SYSTEMS = {
    "ebm": (["--preset", "smoke", "--set", "run.num_val_jets=32", "--set", "run.num_generated_jets=64",
             "--set", "data.num_train_jets=400", "--set", "data.num_test_jets=100"], "best_step"),
    "nae": (["--preset", "smoke", "--set", "data.num_pixels=16", "--set", "model.image_size=16",
             "--set", "model.channels=4", "--set", "model.hidden_dim=16"], "selected_step"),
}


def _kill_during_best_write(args: list[str], step: int, checkpoints) -> None:
    """Run ``jaxebm args`` until the best checkpoint of ``step`` is being written (its periodic one done), then SIGKILL."""
    child = subprocess.Popen([sys.executable, "-c", _STALLED_BEST_WRITE, str(step), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unfinished = checkpoints / "best" / f"{step}.orbax-checkpoint-tmp-1"
    try:
        deadline = time.monotonic() + 900  # generous: a loaded 2-core machine
        while not (unfinished.exists() and (checkpoints / "latest" / str(step)).exists()):
            assert child.poll() is None and time.monotonic() < deadline, "the run never reached the best write"
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def check_a_kill_during_the_best_checkpoint_write_changes_nothing(system: str, tmp_path) -> None:
    """Train ``system`` straight, then killed during its selected best write and rerun; compare (module doc)."""
    settings, selected_key = SYSTEMS[system]
    data_dir = ["--set", f"data.data_dir={json.dumps(str(tmp_path / 'data'))}", "--quiet"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", system, *settings, *data_dir, "--out", str(straight)]) == 0
    expected = json.loads((straight / "seed_0" / "results.json").read_text())

    # Killed while writing the best checkpoint of the step the uninterrupted run selects, so losing it
    # would select another step.
    args = ["train", system, *settings, *data_dir, "--out", str(killed)]
    _kill_during_best_write(args, expected[selected_key], killed / "seed_0" / "checkpoints")
    assert main(args) == 0

    measured = json.loads((killed / "seed_0" / "results.json").read_text())
    provenance = ("timing", "git_commit")  # seconds and the code's commit may differ; every number may not
    assert ({k: v for k, v in measured.items() if k not in provenance}
            == {k: v for k, v in expected.items() if k not in provenance})
    best = sorted(p.name for p in (killed / "seed_0" / "checkpoints" / "best").iterdir())
    assert best == sorted(p.name for p in (straight / "seed_0" / "checkpoints" / "best").iterdir())
