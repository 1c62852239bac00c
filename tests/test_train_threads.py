"""CPU threads per process: every core shared among local processes, unless the user chose a count."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from workbench.train.threads import (
    ACCELERATE_LAUNCH_MARKER,
    Launcher,
    available_cores,
    choose_cpu_threads,
    local_process_count,
    parent_launcher,
)

ACCELERATE_CHILD = {ACCELERATE_LAUNCH_MARKER: "no"}  # what every `accelerate launch` puts in its processes


def test_plain_python_uses_every_core_or_the_users_omp_setting():
    assert choose_cpu_threads(None, {}, cores=16).threads == 16
    assert choose_cpu_threads(None, {"OMP_NUM_THREADS": "3"}, cores=16).threads == 3
    assert choose_cpu_threads(None, {"OMP_NUM_THREADS": "1"}, cores=16).threads == 1  # the user's 1 is kept
    assert choose_cpu_threads(None, {"OMP_NUM_THREADS": ""}, cores=16).threads == 16  # empty: not set
    assert choose_cpu_threads(5, {"OMP_NUM_THREADS": "3"}, cores=16).threads == 5  # --cpu-threads wins
    with pytest.raises(ValueError, match="--cpu-threads must be at least 1"):
        choose_cpu_threads(0, {}, cores=16)


def test_accelerates_own_default_of_one_thread_is_replaced():
    bare_launch = Launcher(environ={"PATH": "/usr/bin"}, argv=["python", "accelerate", "launch", "recipes/medical.py"])
    env = {**ACCELERATE_CHILD, "OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "4"}
    choice = choose_cpu_threads(None, env, cores=16, launcher=bare_launch)
    assert (choice.threads, choice.reason) == (4, "16 cores / 4 local process(es)")
    # 3 cores among 2 processes: floor, never 0.
    assert choose_cpu_threads(None, {**env, "LOCAL_WORLD_SIZE": "2"}, cores=3, launcher=bare_launch).threads == 1
    assert choose_cpu_threads(None, {**env, "LOCAL_WORLD_SIZE": "8"}, cores=3, launcher=bare_launch).threads == 1


def test_a_thread_count_given_to_accelerate_launch_is_kept():
    env = {**ACCELERATE_CHILD, "OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}
    user_env = Launcher(environ={"OMP_NUM_THREADS": "1"}, argv=["accelerate", "launch", "r.py"])
    flag = Launcher(environ={}, argv=["accelerate", "launch", "--num_cpu_threads_per_process", "1", "r.py"])
    flag_eq = Launcher(environ={}, argv=["accelerate", "launch", "--num_cpu_threads_per_process=1", "r.py"])
    for launcher in (user_env, flag, flag_eq):
        assert choose_cpu_threads(None, env, cores=16, launcher=launcher).threads == 1
    # Without a readable launcher only accelerate's bare default "1" counts as not chosen.
    unknown = Launcher(environ=None, argv=None)
    assert choose_cpu_threads(None, env, cores=16, launcher=unknown).threads == 8
    assert choose_cpu_threads(None, {**env, "OMP_NUM_THREADS": "6"}, cores=16, launcher=unknown).threads == 6


def test_local_process_count_reads_the_launchers_variables():
    assert local_process_count({}) == 1
    assert local_process_count({"LOCAL_WORLD_SIZE": "3"}) == 3
    assert local_process_count({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}) == 2
    assert local_process_count({"LOCAL_WORLD_SIZE": "zero", "MPI_LOCALNRANKS": "5"}) == 5
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_parent_launcher_reads_a_real_process_environment_and_arguments():
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "7", "WB_MARK": "a=b"}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--num_cpu_threads_per_process=7"], env=env)
    try:
        time.sleep(0.2)
        seen = parent_launcher(child.pid)
    finally:
        child.kill()
        child.wait()
    assert seen.environ["OMP_NUM_THREADS"] == "7" and seen.environ["WB_MARK"] == "a=b"
    assert seen.argv[-1] == "--num_cpu_threads_per_process=7"
    assert parent_launcher(2**22 + 12345) == Launcher(environ=None, argv=None)  # no such process
