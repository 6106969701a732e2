"""The Ray executor (``curator-loop[ray]``): the compute part of each step on a Ray cluster.

Importing this package imports ``ray``; nothing in curator imports it except
``curator.executors.get_executor`` when the Ray executor is asked for.
"""

from curator.integrations.ray.executor import RayExecutor

__all__ = ["RayExecutor"]
