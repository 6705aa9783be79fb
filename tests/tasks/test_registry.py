"""Every registered task trains end to end on a tiny budget (the CI smoke run)."""

import pytest

from lstmkit.tasks import TASKS, get_task


@pytest.mark.parametrize("name", sorted(TASKS))
def test_smoke_run_of_every_registered_task(name, tmp_path):
    TASKS[name].smoke(tmp_path)
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
    assert (tmp_path / "config.json").exists()


def test_unknown_task_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown task 'speech'; registered tasks: adding"):
        get_task("speech")
