"""Review queue and the review steps built on it."""

from tasks.errors import LeaseLost, QueueError
from tasks.review.contract import State, Task
from tasks.review.queue import ReviewQueue

__all__ = ["LeaseLost", "QueueError", "ReviewQueue", "State", "Task"]
