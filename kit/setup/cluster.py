"""Where the workers run: a local Ray instance of the kit's own, or a running Ray cluster of several machines.

`ray_address: null` starts a fresh local instance (Ray's address "local"), whatever else runs on the machine: another
cluster, RAY_ADDRESS, or a stale /tmp/ray/ray_current_cluster. `ray_address: auto` (or HOST:PORT) joins a running
cluster; the workers are then placed node by node, one verl resource-pool entry per node, each pinned to its node by
Ray's node-id label, and FSDP spans them all. Checkpoints and the Hugging Face export are written by the workers, so
on a cluster output_dir must be a folder every node sees at the same path: checked before any worker starts.
"""

import logging
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import ray
import torch
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.single_controller.ray import RayResourcePool

from kit.errors import KitError

RAY_QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
PLACEMENT_TIMEOUT_S = 120  # a node that cannot host its workers (resources taken) fails the run after this long


def node_gpus(cfg) -> list[int]:
    """The GPUs of each node the run may use: this machine's visible GPUs, or (joining cfg.ray_address) each
    alive node's, in Ray's order."""
    if cfg.ray_address is None:
        return [torch.cuda.device_count()]
    join(cfg.ray_address)
    return [int(node["Resources"].get("GPU", 0)) for node in alive_nodes()]


def join(address: str):
    """Connect to a running Ray cluster; its failures as one line naming the cause. Ray itself waits minutes for a
    cluster that is not there, so the address is tried first."""
    if ray.is_initialized():
        return
    gcs = _gcs_address(address)
    try:
        host, port = gcs.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise KitError(f"ray_address={address}: no Ray cluster answers at {gcs}: start one with `ray start --head` "
                       "(docs/cluster.md), or set ray_address=null for a local one") from None
    try:
        ray.init(address=gcs, **RAY_QUIET)
    except Exception as exc:
        causes = [exc, exc.__cause__, exc.__context__]
        if any("InvalidAuthToken" in str(cause) or "Authentication" in type(cause).__name__ for cause in causes):
            raise KitError(f"ray_address={address}: the cluster uses Ray's token authentication and refused this "
                           "process: run it with RAY_AUTH_MODE=token and the head's token (RAY_AUTH_TOKEN, or the "
                           "head's ~/.ray/auth_token), or start every node with RAY_AUTH_MODE=disabled (docs/cluster.md)") from None
        raise KitError(f"ray_address={address}: could not join the Ray cluster at {gcs} ({type(exc).__name__}: "
                       f"{_first_line(exc)})") from None


def _gcs_address(address: str) -> str:
    """HOST:PORT of the cluster's head; for auto, the one RAY_ADDRESS or this machine's last `ray start` names."""
    if address != "auto":
        return address
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # written by `ray start --head`
    found = os.environ.get("RAY_ADDRESS") or (current.read_text().strip() if current.exists() else "")
    if not found:
        raise KitError("ray_address=auto: no Ray cluster runs on this machine (no RAY_ADDRESS, no `ray start --head` "
                       "here): start one (docs/cluster.md), or give its HOST:PORT")
    return found


def start_local(cfg):
    """A fresh local Ray instance with every core for the workers (address "local": never another cluster)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=max(os.cpu_count(), cfg.num_workers), **RAY_QUIET)


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node["Alive"]]


def resource_pool(cfg, on_gpu: bool) -> RayResourcePool:
    """verl's resource pool for the workers: cfg.worker_layout workers per node. On a cluster each entry's
    placement group is pinned to its own node (verl's own STRICT_PACK groups may share a node with room for two)."""
    pool = RayResourcePool(list(cfg.worker_layout), use_gpu=on_gpu, max_colocate_count=1)
    if cfg.ray_address is not None:
        bundle = {"CPU": 1, **({"GPU": 1} if on_gpu else {})}  # verl's bundle for max_colocate_count 1
        pool.pgs = [placement_group([bundle] * count, strategy="STRICT_PACK",
                                    bundle_label_selector=[{"ray.io/node-id": node}] * count)
                    for node, count in zip(worker_nodes(cfg, on_gpu), cfg.worker_layout)]
        ready, _ = ray.wait([pg.ready() for pg in pool.pgs], num_returns=len(pool.pgs), timeout=PLACEMENT_TIMEOUT_S)
        if len(ready) < len(pool.pgs):
            raise KitError(f"the Ray cluster could not place {list(cfg.worker_layout)} workers on its nodes within "
                           f"{PLACEMENT_TIMEOUT_S} s: free their {'GPUs' if on_gpu else 'CPUs'} (another job holds "
                           "them?) or lower num_gpus / num_cpu_workers")
    return pool


def worker_nodes(cfg, on_gpu: bool) -> list[str]:
    """The node ids that get workers, one per cfg.worker_layout entry: those with GPUs (for GPU workers), in Ray's
    order, the same order node_gpus() counted them in."""
    nodes = [node["NodeID"] for node in alive_nodes() if not on_gpu or node["Resources"].get("GPU", 0) > 0]
    return nodes[: len(cfg.worker_layout)]


_node_of_worker = {}  # Ray actor id -> node id of each worker, on a cluster: to name the node of one that dies


def remember_placement(placement: list[tuple[str, str]]) -> str:
    """Note each worker's node; one line saying how many workers run on which node."""
    _node_of_worker.update(placement)
    nodes = [node for _, node in placement]
    counts = {node: nodes.count(node) for node in dict.fromkeys(nodes)}
    return (f"Ray cluster: {len(nodes)} workers on {len(counts)} node(s): "
            + ", ".join(f"{node_name(node)} x{count}" for node, count in counts.items()))


def check_shared_output_dir(cfg):
    """On a cluster, stop before any worker starts unless every node that gets workers sees output_dir as the
    driver does: the driver writes a marker there, a task on each node reads it and writes its own, the driver
    reads those back."""
    if cfg.ray_address is None:
        return
    folder = Path(cfg.output_dir).resolve() / f".node-check-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        (folder / "driver").write_text("written by the driver")
        nodes = worker_nodes(cfg, on_gpu=cfg.num_gpus > 0)
        seen = ray.get([_answer_marker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                        .remote(str(folder), node) for node in nodes])
        for node, driver_seen in zip(nodes, seen):
            if not driver_seen or not (folder / node).exists():
                raise KitError(f"output_dir {cfg.output_dir} is not shared with node {node_name(node)}: the workers "
                               "write checkpoints and the Hugging Face export there, so it must be one folder every "
                               "node sees at the same path (NFS or another shared filesystem; docs/cluster.md)")
    finally:
        for marker in folder.glob("*"):
            marker.unlink()
        folder.rmdir()


@ray.remote(num_cpus=0)
def _answer_marker(folder: str, node: str) -> bool:
    """On one node: whether the driver's marker is there; then this node's own."""
    seen = (Path(folder) / "driver").exists()
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / node).write_text("written by a task on this node")
    except OSError:
        pass  # the driver finds no marker of this node's, and says so
    return seen


def node_name(node_id: str) -> str:
    """A node as a person finds it: its IP address and the start of its Ray id."""
    address = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id), "?")
    return f"{address} (id {node_id[:8]})"


def where_worker_died(err: Exception) -> str:
    """For a worker that died on a cluster, ' on node IP (id ...)'; '' for a local run."""
    node = _node_of_worker.get(getattr(err, "actor_id", None))
    return f" on node {node_name(node)}" if node else ""


def dead_worker_node(wait_s: float = 30) -> str | None:
    """On a cluster: a node of the workers that Ray counts dead, named, waiting up to wait_s for Ray to notice a
    lost node (its health checks take seconds); None for a local run, or when every worker node stays alive."""
    nodes = set(_node_of_worker.values())
    deadline = time.time() + wait_s
    while nodes:
        try:
            dead = [entry["NodeID"] for entry in ray.nodes() if entry["NodeID"] in nodes and not entry["Alive"]]
        except Exception:  # Ray itself is gone
            return None
        if dead or time.time() > deadline:
            return node_name(dead[0]) if dead else None
        time.sleep(1)
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
