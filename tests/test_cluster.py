"""The kit on a Ray cluster of two nodes, both on this machine: a head and a second node, each started with
`ray start` and one CPU of its own, so verl's resource pool must use both. The second node runs in a mount namespace
of its own with a private folder mounted over one path, so an output_dir there is one the driver and that node see
differently. Both nodes are stopped at the end by the process groups started here."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Ray's command line from this interpreter's environment: `ray` on PATH may be another one, or none (a virtual
# environment's python run without activating it)
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # what `ray start --head` leaves for ray_address=auto
TINY_RUN = ("model_path=embedded:tiny", "num_gpus=0", "num_cpu_workers=2", "batch_size=2", "n_generations=4",
            "val_size=8", "val_every=0", "save_every=1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mount_namespaces_work() -> bool:
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp, self.private = tmp, tmp / "private"
        self.private.mkdir()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray 2.60 starts heads with token authentication; nodes and drivers of this test run without it
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.private_mount = mount_namespaces_work()
        self.head = self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false"])
        self.wait_for_nodes(1)
        self.second = self.start_second()

    def _start(self, name: str, args: list[str], private_mount: bool = False, env=None) -> subprocess.Popen:
        command = [*RAY_CLI, "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--block"]
        if private_mount:  # this node sees a tmpfs at self.private, the driver the real folder
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       f"mount -t tmpfs tmpfs {self.private} && exec {' '.join(command)}"]
        log = open(self.tmp / f"{name}.log", "a")
        return subprocess.Popen(command, env=env or self.env, stdout=log, stderr=log, start_new_session=True)

    def start_second(self) -> subprocess.Popen:
        second = self._start("second", [f"--address={self.address}"], private_mount=self.private_mount)
        self.wait_for_nodes(2)
        return second

    def wait_for_nodes(self, count: int, address: str | None = None, env=None, timeout: float = 90):
        probe = ("import ray; ray.init(address='%s', logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))" % (address or self.address))
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", probe], env=env or self.env, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the test cluster did not reach {count} alive nodes: see {self.tmp}/*.log")

    def kill(self, node: subprocess.Popen, sig=signal.SIGKILL):
        for signal_now in (sig, signal.SIGKILL):
            try:
                os.killpg(node.pid, signal_now)  # `ray start --block` and the Ray processes it started
                node.wait(timeout=15)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self, *overrides, env=None):
        return subprocess.run([sys.executable, "algorithm.py", *TINY_RUN, *overrides], cwd=ROOT, env=env or self.env,
                              capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    before = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.exists() else None
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    for node in (cluster.second, cluster.head):
        cluster.kill(node, signal.SIGTERM)
    if before is None:  # `ray start --head` wrote it: leave no pointer at a cluster that is gone
        CURRENT_CLUSTER.unlink(missing_ok=True)
    else:
        CURRENT_CLUSTER.write_text(before)


def placement(stdout: str) -> list[str]:
    """The node ids of the kit's 'Ray cluster: N workers on M node(s): IP (id X) xK, ...' line, one per worker."""
    line = next(line for line in stdout.splitlines() if line.startswith("Ray cluster:"))
    return [node for node, count in re.findall(r"\(id (\w+)\) x(\d+)", line) for _ in range(int(count))]


def test_workers_spread_over_both_nodes_checkpoint_and_resume(cluster):
    out_dir = cluster.tmp / "run"
    first = cluster.run(f"ray_address={cluster.address}", "steps_per_epoch=2", f"output_dir={out_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    nodes = placement(first.stdout)
    assert len(nodes) == 2 and len(set(nodes)) == 2  # FSDP across both nodes, one worker each
    assert (out_dir / "checkpoints" / "global_step_2").is_dir() and (out_dir / "hf_model").is_dir()
    again = cluster.run("ray_address=auto", "steps_per_epoch=3", f"output_dir={out_dir}")  # auto: this machine's head
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout and "global_step_2" in again.stdout
    assert len(set(placement(again.stdout))) == 2
    steps = [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert 3 in steps


@pytest.mark.skipif(not mount_namespaces_work(), reason="needs mount namespaces (unshare -m) for a node's own view")
def test_an_output_dir_a_node_does_not_see_stops_before_any_worker_starts(cluster):
    result = cluster.run(f"ray_address={cluster.address}", "steps_per_epoch=2",
                         f"output_dir={cluster.private / 'run'}")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("verl-kit: error: output_dir") and "is not shared with node" in error, result.stderr[-2000:]
    assert "Ray cluster:" not in result.stdout and not (cluster.private / "run" / "checkpoints").exists()


def test_a_local_run_ignores_the_running_cluster_and_a_stale_pointer(cluster, tmp_path):
    # ray_address null: a Ray instance of the kit's own, though RAY_ADDRESS names the cluster and a stale
    # /tmp/ray/ray_current_cluster names a head that is gone
    saved = CURRENT_CLUSTER.read_text()
    CURRENT_CLUSTER.write_text(f"127.0.0.1:{free_port()}")
    try:
        result = cluster.run("steps_per_epoch=1", "num_cpu_workers=1", f"output_dir={tmp_path}",
                             env={**cluster.env, "RAY_ADDRESS": cluster.address})
    finally:
        CURRENT_CLUSTER.write_text(saved)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ray cluster:" not in result.stdout and (tmp_path / "hf_model").is_dir()


def test_joining_no_cluster_is_one_line(cluster, tmp_path):
    result = cluster.run(f"ray_address=127.0.0.1:{free_port()}", f"output_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("verl-kit: error: ray_address=127.0.0.1:")
    assert "no Ray cluster answers" in result.stderr and "Traceback" not in result.stderr


def test_a_cluster_with_token_authentication_is_joined_with_its_token_and_named_without(cluster, tmp_path):
    # a head as Ray 2.60 starts it by default (token authentication, the token in ~/.ray/auth_token)
    port = free_port()
    env = {key: value for key, value in cluster.env.items() if key != "RAY_AUTH_MODE"}
    head = cluster._start("token-head", ["--head", f"--port={port}", "--include-dashboard=false"], env=env)
    saved = CURRENT_CLUSTER.read_text()
    try:
        cluster.wait_for_nodes(1, address=f"127.0.0.1:{port}", env={**env, "RAY_AUTH_MODE": "token"})
        refused = cluster.run(f"ray_address=127.0.0.1:{port}", "num_cpu_workers=1", f"output_dir={tmp_path}",
                              env=env)
        joined = cluster.run(f"ray_address=127.0.0.1:{port}", "num_cpu_workers=1", "steps_per_epoch=1",
                             f"output_dir={tmp_path}", env={**env, "RAY_AUTH_MODE": "token"})
    finally:
        cluster.kill(head, signal.SIGTERM)
        CURRENT_CLUSTER.write_text(saved)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the cluster uses Ray's token authentication" in refused.stderr.strip().splitlines()[-1]
    assert joined.returncode == 0, joined.stderr[-3000:]


def test_a_node_that_dies_mid_run_is_named_and_the_rerun_resumes(cluster):
    # last in this file: it kills the second node (and starts it again)
    out_dir = cluster.tmp / "dies"
    command = [sys.executable, "algorithm.py", *TINY_RUN, f"ray_address={cluster.address}", "steps_per_epoch=500",
               "save_every=2", f"output_dir={out_dir}"]
    run = subprocess.Popen(command, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    metrics = out_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if metrics.exists() and sum('"train/' in line for line in metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    cluster.kill(cluster.second)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 2, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("verl-kit: error: Ray node ") and "died during the step" in error, stderr[-3000:]
    assert "to resume from the last checkpoint" in error and "Traceback" not in stderr
    assert any(f"(id {node})" in error for node in placement(stdout)), error
    cluster.second = cluster.start_second()
    again = subprocess.run(command[:-3] + ["steps_per_epoch=4", "save_every=2", f"output_dir={out_dir}"], cwd=ROOT,
                           env=cluster.env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
