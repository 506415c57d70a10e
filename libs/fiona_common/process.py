"""Supervised child processes: used by ``fiona up`` and by the receiver's worker processes."""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
STOP_GRACE_SECONDS = 20.0
SUPERVISOR_ENV = "FIONA_SUPERVISOR_PID"  # set for each child: who supervises it
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_supervisor() -> None:
    """In a supervised child: be sent SIGTERM when the supervisor dies, even by SIGKILL.

    Without it a killed ``fiona up`` left its services running, holding their ports.
    """
    supervisor = os.environ.pop(SUPERVISOR_ENV, "")  # not for processes this one starts
    if supervisor.isdigit():
        _term_when_parent_dies()
        if os.getppid() != int(supervisor):  # it died before prctl: nobody would tell us
            os.kill(os.getpid(), signal.SIGTERM)


def _term_when_parent_dies() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)
    # Not a FIONA process (nats-server), so it cannot call die_with_supervisor itself: the
    # kernel is asked between fork and exec (safe only from a single-threaded supervisor).
    foreign: bool = False

    def start(self) -> None:
        # Own process group: Ctrl-C reaches only the supervisor, which stops children in order.
        env = {**self.env, SUPERVISOR_ENV: str(os.getpid())}
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            process_group=0,
            preexec_fn=_term_when_parent_dies if self.foreign else None,
        )
        self.started_at = time.monotonic()
        log.info("started", extra={"child": self.name, "pid": self.process.pid})

    def check(self, now: float) -> None:
        """Restart the child if it died, with a growing delay if it keeps dying."""
        if self.process is not None and self.process.poll() is None:
            if now - self.started_at > 60:
                self.restarts = 0  # it ran a while: the next crash restarts promptly
            return
        if self.process is not None:
            log.error(
                "child exited, restarting",
                extra={"child": self.name, "code": self.process.returncode},
            )
            self.process = None
            self.next_start = now + min(MAX_BACKOFF_SECONDS, 2.0**self.restarts)
            self.restarts += 1
        if now >= self.next_start:
            self.start()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("child did not stop in time, killing", extra={"child": self.name})
            self.process.kill()
            self.process.wait()


def stop_children(children: list[Child], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every child, then wait for all of them (SIGKILL after ``grace_seconds``)."""
    deadline = time.monotonic() + grace_seconds
    for child in children:
        child.terminate()
    for child in children:
        child.wait(deadline)
