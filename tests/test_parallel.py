"""Data parallelism: row sharing between processes, distributed settings, and the sharded CD step,
generation and scores against one device on 4 forced host devices, in one process and in two
(subprocesses: the device count is fixed when JAX starts, and this process must keep its own)."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxebm import parallel

CHECK_SCRIPT = pathlib.Path(__file__).with_name("parallel_check.py")


def check_command(*args: str, devices: int) -> tuple[list[str], dict[str, str]]:
    """Command line and environment running ``parallel_check.py args`` on ``devices`` host devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return [sys.executable, "-W", "error", str(CHECK_SCRIPT), *args], env


def assert_checks_passed(returncode: int, stdout: str, stderr: str, num_checks: int) -> None:
    assert returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-5000:]}"
    assert stdout.count("ok ") == num_checks, stdout


def test_sharded_runs_match_one_device_on_four_host_devices():
    command, env = check_command(devices=4)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=CHECK_SCRIPT.parents[1])
    assert_checks_passed(result.returncode, result.stdout, result.stderr, num_checks=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_two_devices_each_match_one_device():
    """initialize_distributed, process_rows + global_batch feeding, placement of a process-local state."""
    port = str(free_port())
    processes = []
    for process_id in ("0", "1"):
        command, env = check_command(process_id, port, devices=2)
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          cwd=CHECK_SCRIPT.parents[1]))
    try:
        outputs = [process.communicate(timeout=300) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert_checks_passed(process.returncode, stdout, stderr, num_checks=2)


@pytest.mark.parametrize("rows", [10, np.array([9, 2, 4, 7, 30, 11, 5])])
def test_process_rows_are_equal_disjoint_sorted_blocks(rows):
    shares = [parallel.process_rows(rows, index, 3) for index in range(3)]
    all_rows = np.sort(np.arange(rows) if np.ndim(rows) == 0 else rows)
    size = len(all_rows) // 3
    assert all(len(share) == size and share.dtype == np.int64 for share in shares)
    np.testing.assert_array_equal(np.concatenate(shares), all_rows[: 3 * size])


def test_process_rows_rejects_bad_arguments():
    with pytest.raises(ValueError, match="process_index"):
        parallel.process_rows(10, 3, 3)
    with pytest.raises(ValueError, match="cannot be shared"):
        parallel.process_rows(2, 0, 3)


def test_process_rows_defaults_to_this_process():
    np.testing.assert_array_equal(parallel.process_rows(5), np.arange(5))


def test_distributed_settings_prefer_arguments_then_environment():
    environ = {"JAX_COORDINATOR_ADDRESS": "node0:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}
    assert parallel.distributed_settings(environ=environ) == {
        "coordinator_address": "node0:1234", "num_processes": 4, "process_id": 2}
    assert parallel.distributed_settings("node1:99", 8, 0, environ=environ) == {
        "coordinator_address": "node1:99", "num_processes": 8, "process_id": 0}
    assert parallel.distributed_settings(environ={}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None}


def test_one_device_mesh_and_size_checks():
    mesh = parallel.make_mesh()
    assert mesh.shape == {parallel.DATA_AXIS: jax.device_count()}
    parallel.check_divisible(mesh, batch_size=jax.device_count() * 3)
    with pytest.raises(ValueError, match="num_devices"):
        parallel.make_mesh(0)
