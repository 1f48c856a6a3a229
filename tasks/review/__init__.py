"""Review queue and the review steps built on it."""

from tasks.review.queue import LeaseLost, QueueError, ReviewQueue, State, Task

__all__ = ["LeaseLost", "QueueError", "ReviewQueue", "State", "Task"]
