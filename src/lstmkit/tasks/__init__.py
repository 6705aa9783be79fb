"""One module per application; ``TASKS`` registers each by name."""

from lstmkit.tasks.registry import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task"]
