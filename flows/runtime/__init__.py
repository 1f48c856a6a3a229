"""Runtime, not flows: the task runner a recipe chooses (threads, Dask, Ray) and its cluster,
one Prefect API for the workers, a command's flow run, and bounded task submission."""

from flows.runtime.clusters import Cluster, current_cluster, scaled_out, stage_runner
from flows.runtime.commands import flow_runner, one_writer, run_command
from flows.runtime.submit import Done, gather, stage_limit, submit_bounded, submit_unless_found

__all__ = ["Cluster", "Done", "current_cluster", "gather", "flow_runner", "one_writer", "run_command",
           "scaled_out", "stage_limit", "stage_runner", "submit_bounded", "submit_unless_found"]
