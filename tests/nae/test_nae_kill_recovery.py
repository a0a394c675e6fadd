"""An NAE run killed (SIGKILL) during the write of its best checkpoint, then run again with the same command, ends
with the answer of an uninterrupted run (`kill_recovery`; the plain EBM's case is tests/test_kill_recovery.py)."""
import pytest
from kill_recovery import check_a_kill_during_the_best_checkpoint_write_changes_nothing


@pytest.mark.slow
def test_a_kill_during_the_best_checkpoint_write_changes_nothing(tmp_path):
    check_a_kill_during_the_best_checkpoint_write_changes_nothing("nae", tmp_path)
