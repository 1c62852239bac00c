"""CPU threads per process: every available core, shared among the processes of this machine.

``accelerate launch`` always exports ``OMP_NUM_THREADS`` to the processes it starts: the
user's value, its ``--num_cpu_threads_per_process``, or ``1`` when neither was given (unless
the launch is marked CPU, see ``accelerate/commands/launch.py``). Inside the recipe the value
alone cannot say whether the user chose it, so the launcher itself is asked: its own
environment and arguments (``/proc/<parent>/``) show whether a thread count was given to
it. Where that cannot be read, accelerate's bare default ``1`` is taken as not chosen.
An explicit ``--cpu-threads`` always wins, then a thread count the user set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Set by every `accelerate launch` launcher (simple, multi-GPU/torchrun, DeepSpeed) for its processes.
ACCELERATE_LAUNCH_MARKER = "ACCELERATE_DYNAMO_BACKEND"
# How launchers name the number of processes on this machine.
_LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


@dataclass(frozen=True)
class Launcher:
    """What the parent process (the launcher) was started with; None where it could not be read."""

    environ: Mapping[str, str] | None
    argv: Sequence[str] | None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity and cpusets included)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def local_process_count(environ: Mapping[str, str]) -> int:
    """Processes of this run on this machine, as the launcher announced them (1 without a launcher)."""
    for name in _LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def parent_launcher(pid: int | None = None) -> Launcher:
    """The launching process's start-up environment and arguments from ``/proc`` (Linux); None elsewhere."""
    proc = Path("/proc") / str(pid if pid is not None else os.getppid())
    try:
        env_raw = (proc / "environ").read_bytes()
        argv_raw = (proc / "cmdline").read_bytes()
    except OSError:
        return Launcher(environ=None, argv=None)
    environ = dict(
        item.split("=", 1) for item in env_raw.decode("utf-8", "replace").split("\0") if "=" in item
    )
    argv = [a for a in argv_raw.decode("utf-8", "replace").split("\0") if a]
    return Launcher(environ=environ, argv=argv)


def _launcher_was_given_threads(launcher: Launcher, value: str) -> bool:
    """Whether the user gave ``accelerate launch`` a thread count (so ``value`` is theirs)."""
    if launcher.environ is None or launcher.argv is None:
        # Cannot ask the launcher: accelerate's unasked default is exactly "1".
        return value != "1"
    if "OMP_NUM_THREADS" in launcher.environ:
        return True
    return any(a == "--num_cpu_threads_per_process" or a.startswith("--num_cpu_threads_per_process=") for a in launcher.argv)


def choose_cpu_threads(
    requested: int | None,
    environ: Mapping[str, str],
    *,
    cores: int,
    launcher: Launcher | None = None,
) -> ThreadChoice:
    """Threads per process: ``requested``, else a user's ``OMP_NUM_THREADS``, else ``cores`` / local processes."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--cpu-threads must be at least 1, got {requested}")
        return ThreadChoice(requested, "--cpu-threads")
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        under_accelerate = ACCELERATE_LAUNCH_MARKER in environ
        if not under_accelerate:
            return ThreadChoice(int(value), "OMP_NUM_THREADS")
        if _launcher_was_given_threads(launcher or Launcher(None, None), value):
            return ThreadChoice(int(value), "thread count given to accelerate launch")
    processes = local_process_count(environ)
    return ThreadChoice(max(1, cores // processes), f"{cores} cores / {processes} local process(es)")


def use_cpu_threads(requested: int | None) -> ThreadChoice:
    """Choose for this process (:func:`choose_cpu_threads`) and apply it with ``torch.set_num_threads``."""
    import torch

    launcher = parent_launcher() if ACCELERATE_LAUNCH_MARKER in os.environ else None
    choice = choose_cpu_threads(requested, os.environ, cores=available_cores(), launcher=launcher)
    torch.set_num_threads(choice.threads)
    return choice
