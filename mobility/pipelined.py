"""Live SUMO in a worker process that steps to the next tick while this process works on the current one.

SUMO's step is the largest cost of a city-scale tick, and libsumo holds Python's GIL through it, so in-process it
adds to everything else a tick does (the radio world, scheduling, training). In its own process it overlaps with
them: `advance(t, next_s)` hands back the snapshot at t, already read, and sends the worker on to next_s at once.
The worker is started as a plain `python -c` child (not multiprocessing), so a user's script needs no
`if __name__ == "__main__"` guard, and it leaves when the pipe to it closes, whatever ends this process."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from mobility.errors import MobilityError
from mobility.netgen import SumoFiles
from mobility.snapshot import Snapshot
from mobility.sumo import CLOCK_EPS_S, SumoMobility

# Seconds close() waits for the worker to finish its step and shut SUMO down cleanly (SUMO then writes the ends of
# its own output files) before killing it.
_CLOSE_TIMEOUT_S = 60.0
# The worker's command: this process's import path first, so it runs the same code from the same place.
_BOOTSTRAP = ("import sys, json; sys.path[:0] = json.loads(sys.argv[2]); "
              "import mobility.pipelined as m; m.serve(int(sys.argv[1]))")


class PipelinedSumo:
    """SumoMobility (same arguments) run in a worker process, one tick ahead when the caller says where it goes next.

    Snapshots are SumoMobility's, bit for bit: the worker makes the same SUMO calls in the same order, only earlier.
    SUMO's errors arrive here as the MobilityError SumoMobility raises, when the step that failed is asked for."""

    def __init__(self, files: SumoFiles | None, **options: Any) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno()), json.dumps(sys.path)],
                pass_fds=(theirs.fileno(),),
            )
            self._conn = Connection(os.dup(ours.fileno()))
        self._ahead: float | None = None  # the time the worker is stepping to, not yet collected
        self._closed = False
        try:
            self.net_file, self._bounds = self._call("open", (files, options))
        except BaseException:
            self.close()
            raise

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        """The snapshot at time_s (see SumoMobility.advance); with next_s, the worker then steps on to next_s at
        once, so the next advance (which must not ask for an earlier time) finds it ready."""
        if self._closed:
            raise MobilityError("advance() on a closed PipelinedSumo")
        snap = None
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            ready = self._reply()
            if ahead > time_s + CLOCK_EPS_S:
                raise MobilityError(f"advance({time_s}) after looking ahead to {ahead} s; SUMO is already there")
            if ahead >= time_s - CLOCK_EPS_S:
                snap = ready
        if snap is None:  # nothing ahead, or the look-ahead fell short of time_s
            snap = self._call("advance", time_s)
        if next_s is not None:
            self._send("advance", next_s)
            self._ahead = next_s
        return snap

    def step(self, time_s: float) -> None:
        """SUMO steps to time_s and reads nothing back (see SumoMobility.step); not while looking ahead."""
        if self._closed or self._ahead is not None:
            raise MobilityError("step() needs an open PipelinedSumo that is not looking ahead")
        self._call("step", time_s)

    def bounds(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax over all lanes of the network."""
        return self._bounds

    @property
    def pid(self) -> int:
        """The worker's process id (SUMO's memory and CPU time are counted there)."""
        return self._process.pid

    def _call(self, command: str, argument: object) -> Any:
        self._send(command, argument)
        return self._reply()

    def _send(self, command: str, argument: object) -> None:
        try:
            self._conn.send((command, argument))
        except OSError as exc:
            raise self._died() from exc

    def _reply(self) -> Any:
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        if not ok:
            raise value
        return value

    def _died(self) -> MobilityError:
        code = self._process.wait()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return MobilityError(f"the SUMO worker process {how}" + (" (out of memory?)" if code == -signal.SIGKILL
                                                                  else "; its messages are on stderr above"))

    def close(self) -> None:
        """Shut SUMO down cleanly (idempotent): the worker finishes any step it is in, closes SUMO and exits."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(MobilityError):  # a dead worker has nothing left to close
            if self._ahead is not None:
                self._ahead = None
                with contextlib.suppress(Exception):  # what SUMO raised stepping ahead: nobody asked for that time
                    self._reply()
            self._send("close", None)
        self._conn.close()
        try:
            self._process.wait(timeout=_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> PipelinedSumo:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(fd: int) -> None:
    """The worker: answer ("open", (files, options)), ("advance", time_s) and ("step", time_s) requests until
    ("close", None). Every reply is (True, value) or (False, the exception raised). If the pipe closes first, the
    parent died: the worker leaves at once, leaving SUMO's error log behind as a killed in-process SUMO would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    conn = Connection(fd)
    mobility: SumoMobility | None = None
    try:
        while True:
            try:
                command, argument = conn.recv()
            except (EOFError, OSError):
                os._exit(1)
            if command == "close":
                return
            try:
                if command == "open":
                    files, options = argument
                    mobility = SumoMobility(files, **options)
                    reply: object = (mobility.net_file, mobility.bounds())
                else:
                    assert mobility is not None and command in ("advance", "step"), command
                    reply = getattr(mobility, command)(argument)
            except Exception as exc:  # every failure goes back to the caller, who raises it
                if not isinstance(exc, MobilityError):
                    exc.add_note("in the SUMO worker process:\n" + traceback.format_exc())
                try:
                    conn.send((False, exc))
                except pickle.PicklingError:
                    conn.send((False, MobilityError(f"in the SUMO worker process: {type(exc).__name__}: {exc}")))
                continue
            try:
                conn.send((True, reply))
            except OSError:
                os._exit(1)
    finally:
        if mobility is not None:
            mobility.close()
        conn.close()
