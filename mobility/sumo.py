"""Live SUMO mobility: libsumo in-process (fast, default) or TraCI to a SUMO subprocess (GUI or remote SUMO)."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

import numpy as np

from mobility.errors import MobilityError
from mobility.netgen import SumoFiles, check_xml, sumo_home
from mobility.rsu import net_bounds
from mobility.snapshot import Snapshot, sumo_angle_to_heading

# traci.constants, copied so that importing this module does not import traci/libsumo.
_CMD_GET_VEHICLE_VARIABLE = 0xA4
_VAR_SPEED = 0x40
_VAR_POSITION = 0x42
_VAR_ANGLE = 0x43
# SUMO reports this for a vehicle that is not on a lane (e.g. while teleporting); such rows are dropped.
_INVALID_DOUBLE = -(2.0**30)
# Seconds (one try each) to wait for a remote SUMO to accept the connection, e.g. while it loads its network.
_REMOTE_RETRIES = 10
# Clock tolerance: SUMO counts time in whole milliseconds.
CLOCK_EPS_S = 1e-6
# TraCI connection labels: never reused, because traci keeps a connection registered when its close fails (SUMO
# already dead), and an id()-based label of a later object could collide with it.
_TRACI_LABELS = itertools.count()


def _import_libsumo() -> Any:
    """Import libsumo without its unconditional stdout note about the installed pyarrow version."""
    with contextlib.redirect_stdout(io.StringIO()):
        import libsumo
    return libsumo


@contextlib.contextmanager
def _fd_stderr_to(path: Path) -> Iterator[None]:
    """Meanwhile, the process's own stderr (file descriptor 2) appends to `path`: libsumo prints the errors of
    loading a network there, before SUMO's --error-log takes over, and its exception then says only "Process
    Error"."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class SumoMobility:
    """Steps a SUMO simulation on demand and reads every vehicle's position, speed and heading once per tick."""

    # libsumo holds one simulation per process; remember who owns it to fail clearly instead of corrupting it.
    _libsumo_owner: ClassVar[SumoMobility | None] = None

    def __init__(
        self,
        files: SumoFiles | None,
        *,
        step_length_s: float,
        seed: int,
        backend: Literal["libsumo", "traci"] = "libsumo",
        time_to_teleport_s: float | None = 300.0,
        scale: float | None = 1.0,
        gui: bool = False,
        remote: tuple[str, int] | None = None,
        log_dir: Path | None = None,
        config_file: Path | None = None,
        begin_s: float | None = None,
        options: Sequence[str] = (),
        vehicle_classes: Collection[str] = (),
        load_state: Path | None = None,
    ) -> None:
        """`files` is None only with `remote` (a SUMO started elsewhere, with its own inputs); `gui` launches
        sumo-gui and `remote` attaches to host:port, both through TraCI. `config_file` (a .sumocfg) is loaded first,
        so its other options apply and the explicit ones here override it; None for time_to_teleport_s or scale
        leaves them to it. `options` are extra SUMO options, `vehicle_classes` the SUMO vClasses a snapshot keeps
        (empty: all), `load_state` a state saved by `save_state` to start from instead of `begin_s`. SUMO's error
        log lives in `log_dir` (e.g. the run directory; default the system's temporary folder) until close()."""
        if remote is None and files is None:
            raise MobilityError("SumoMobility needs SUMO files unless it attaches to a remote SUMO")
        paths = [("net", files.net), *(("routes", p) for p in files.routes),
                 *(("additional", p) for p in files.additional)] if files else []
        for name, path in paths:
            if not Path(path).is_file():
                raise MobilityError(f"SUMO {name} file {path} does not exist; fix the path in the scenario")
            check_xml(path, f"SUMO {name}")
        if step_length_s <= 0:
            raise MobilityError(f"step_length_s={step_length_s} must be > 0")
        if scale is not None and scale <= 0:
            raise MobilityError(f"scale={scale} must be > 0")
        if backend not in ("libsumo", "traci"):
            raise MobilityError(f"backend={backend!r} must be 'libsumo' or 'traci'")
        if (gui or remote) and backend != "traci":
            raise MobilityError("gui and remote SUMO need backend='traci' (libsumo runs SUMO in-process, headless)")
        if backend == "libsumo" and SumoMobility._libsumo_owner is not None:
            raise MobilityError(
                "libsumo runs one simulation per process and another SumoMobility is open; "
                "close() it first or use backend='traci'"
            )

        self._backend = backend
        self._closed = False
        self._classes = frozenset(vehicle_classes)
        self._allowed: dict[str, bool] = {}  # vehicle id -> its class is kept (asked once per vehicle)
        self.net_file = Path(files.net) if files else None
        log_fd, log_name = tempfile.mkstemp(prefix="sumo-errors-", suffix=".log", dir=log_dir)
        os.close(log_fd)
        self._error_log = Path(log_name)
        cmd: list[str] = []
        if files:
            settings: dict[str, object] = {
                "--configuration-file": config_file,
                "--net-file": files.net,
                # Vehicle types must be known before the routes that use them: route files load in this order.
                "--route-files": ",".join(str(p) for p in files.routes),
                "--step-length": float(step_length_s),
                "--seed": int(seed),
                "--scale": scale,
                "--time-to-teleport": time_to_teleport_s,
                "--begin": None if load_state else begin_s,
                "--load-state": load_state,
                # Random-number states go into saved states, so a run started from one continues like the run
                # that saved it.
                "--save-state.rng": "true",
                "--save-state.precision": 6,  # positions in a saved state (SUMO's default: centimetres)
                "--error-log": self._error_log,
                "--additional-files": ",".join(str(p) for p in files.additional) or None,
            }
            binary = "sumo-gui" if gui else "sumo"
            cmd = [str(sumo_home() / "bin" / binary), "--no-step-log", "--no-warnings"]
            cmd += [str(part) for option in settings.items() if option[1] is not None for part in option]
            cmd += [*map(str, options), *(["--start", "--quit-on-end"] if gui else [])]
        try:
            self._api, self._errors = self._start(cmd, remote)
        except MobilityError:
            self._error_log.unlink(missing_ok=True)
            raise
        if backend == "libsumo":
            SumoMobility._libsumo_owner = self
        try:
            if backend == "traci":
                # One message per tick instead of three per vehicle. libsumo reads vehicles directly instead: a
                # context subscription makes SUMO run a network-wide spatial query inside every step, which costs
                # more than the in-process getter calls it saves.
                self._api.simulation.subscribeContext(
                    "", _CMD_GET_VEHICLE_VARIABLE, 1e9, [_VAR_POSITION, _VAR_SPEED, _VAR_ANGLE]
                )
            self._bounds = net_bounds(self.net_file) if self.net_file else self._lane_bounds()
            self._time_s = float(self._api.simulation.getTime())
            # SUMO inserts vehicles only while stepping, so before the first step the network is empty (and a
            # subscription may still hold a previous simulation's results), unless a saved state brought them.
            self._stepped = load_state is not None
        except self._errors as exc:
            self.close()
            raise self._failure("SUMO failed while setting up", exc) from exc

    def _start(self, cmd: list[str], remote: tuple[str, int] | None) -> tuple[Any, tuple[type[BaseException], ...]]:
        """Start the backend (or attach to a remote SUMO); return its API object (same surface for all) and its
        exception types."""
        if self._backend == "libsumo":
            libsumo = _import_libsumo()
            errors: tuple[type[BaseException], ...] = (libsumo.TraCIException, libsumo.FatalTraCIError)
            try:
                with _fd_stderr_to(self._error_log):
                    libsumo.start(cmd)
            except errors as exc:
                with contextlib.suppress(*errors):
                    libsumo.close()
                raise self._failure("SUMO (libsumo) failed to start", exc) from exc
            return libsumo, errors

        import traci
        import traci.exceptions
        from sumolib.miscutils import getFreeSocketPort

        errors = (traci.exceptions.TraCIException, traci.exceptions.FatalTraCIError, OSError)
        label = f"mobility-{next(_TRACI_LABELS)}"
        if remote is not None:
            host, port = remote
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    traci.init(port, host=host, label=label, doSwitch=False, numRetries=_REMOTE_RETRIES)
            except errors as exc:
                raise MobilityError(
                    f"cannot attach to SUMO at {host}:{port} ({type(exc).__name__}: {exc}); start it with "
                    f"sumo --remote-port {port} ... and check host and port"
                ) from exc
            return traci.getConnection(label), errors
        # Launched here rather than by traci.start, which leaves a zombie process behind when SUMO fails to start.
        # SUMO's messages go to the error log, so its own stdout/stderr are not needed.
        port = getFreeSocketPort()
        try:
            process = subprocess.Popen(
                [*cmd, "--remote-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            raise self._failure("SUMO (traci) failed to start", exc) from exc
        try:
            # traci prints "Retrying in 1 seconds" while SUMO opens its port; that is not worth a line of output.
            with contextlib.redirect_stdout(io.StringIO()):
                traci.init(port, label=label, proc=process, doSwitch=False)
        except errors as exc:
            # Let a SUMO that is quitting on error finish writing its error log before reading it.
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise self._failure("SUMO (traci) failed to start", exc) from exc
        return traci.getConnection(label), errors

    def _failure(self, what: str, exc: BaseException) -> MobilityError:
        """A MobilityError carrying SUMO's own error messages, which it writes to the error log, not to Python."""
        try:
            log = self._error_log.read_text(errors="replace").strip()
        except OSError:
            log = ""
        detail = log[-2000:] if log else f"{type(exc).__name__}: {exc}"
        return MobilityError(f"{what}: {detail}")

    def _lane_bounds(self) -> tuple[float, float, float, float]:
        """Bounding box of all lane shapes as a remote SUMO reports them (see rsu.net_bounds)."""
        lane = self._api.lane
        points = np.array([p for lane_id in lane.getIDList() for p in lane.getShape(lane_id)], dtype=np.float64)
        if points.size == 0:
            raise MobilityError("the SUMO network has no lanes; check the net file")
        (xmin, ymin), (xmax, ymax) = points.min(axis=0), points.max(axis=0)
        return float(xmin), float(ymin), float(xmax), float(ymax)

    def advance(self, time_s: float, next_s: float | None = None) -> Snapshot:
        """Step SUMO until its clock reaches time_s (the snapshot carries SUMO's actual time, which may exceed
        time_s by less than one step when time_s is not a multiple of the step length). In-process SUMO cannot step
        ahead while the caller works (libsumo holds the GIL), so next_s changes nothing here; see PipelinedSumo."""
        self.step(time_s)
        if not self._stepped:
            return Snapshot.empty(self._time_s)
        try:
            ids, values = self._read_vehicles()
        except self._errors as exc:
            raise self._failure(f"SUMO failed while reading its vehicles at {self._time_s} s", exc) from exc
        return self._snapshot(ids, values)

    def step(self, time_s: float) -> None:
        """Step SUMO until its clock reaches time_s without reading any vehicle back: SUMO alone, what
        benchmarks.mobility compares the whole layer with."""
        if self._closed:
            raise MobilityError("this SumoMobility is closed")
        if time_s < self._time_s - CLOCK_EPS_S:
            raise MobilityError(f"time {time_s} s goes back in time; SUMO is already at {self._time_s} s")
        if time_s <= self._time_s + CLOCK_EPS_S:
            return
        try:
            self._api.simulationStep(float(time_s))
            self._time_s = float(self._api.simulation.getTime())
        except self._errors as exc:
            raise self._failure(f"SUMO failed while advancing to {time_s} s", exc) from exc
        self._stepped = True

    def _read_vehicles(self) -> tuple[Sequence[str], np.ndarray]:
        """Every vehicle's id, in SUMO's order, and its x, y, speed and SUMO angle as rows of an (n, 4) array."""
        if self._backend == "traci":
            results = self._api.simulation.getContextSubscriptionResults("") or {}
            ids = self._kept(list(results))
            rows = ((*results[v][_VAR_POSITION], results[v][_VAR_SPEED], results[v][_VAR_ANGLE]) for v in ids)
        else:
            # libsumo's SWIG functions themselves (its Python wrapper around each call cost a quarter of the read-back
            # at city scale; subscriptions cost more still: their results come back as dicts), one vehicle at a
            # time, so that its three lookups in SUMO's vehicle map find it in cache, straight into the array:
            # 37% less than three passes over all ids into lists (12k vehicles).
            swig = self._api._libsumo
            position, speed, angle = swig.vehicle_getPosition, swig.vehicle_getSpeed, swig.vehicle_getAngle
            ids = self._kept(swig.vehicle_getIDList())
            rows = ((*position(v), speed(v), angle(v)) for v in ids)
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=4 * len(ids))
        return ids, values.reshape(-1, 4)

    def _kept(self, ids: Sequence[str]) -> list[str] | Sequence[str]:
        """The vehicles whose class is kept; each vehicle's class is asked once, while it is in the network."""
        if not self._classes:
            return ids
        known, get_class = self._allowed, self._api.vehicle.getVehicleClass
        self._allowed = {v: known[v] if v in known else get_class(v) in self._classes for v in ids}
        return [v for v in ids if self._allowed[v]]

    def save_state(self, path: Path) -> None:
        """Write SUMO's full state (vehicles, signals, random-number generators) for `load_state`; a `.sbx` name
        writes SUMO's binary format, the quickest to load."""
        try:
            self._api.simulation.saveState(str(path))
        except self._errors as exc:
            raise self._failure(f"SUMO failed to save its state to {path}", exc) from exc

    def _snapshot(self, ids_list: Sequence[str], values: np.ndarray) -> Snapshot:
        if not ids_list:
            return Snapshot.empty(self._time_s)
        ids = np.array(ids_list, dtype=str)
        keep = np.flatnonzero(values[:, 0] > _INVALID_DOUBLE / 2)
        order = keep[np.argsort(ids[keep], kind="stable")]
        picked = values[order]
        return Snapshot(time_s=self._time_s, ids=ids[order], xy_m=picked[:, :2].copy(), speed_mps=picked[:, 2].copy(),
                        heading_rad=sumo_angle_to_heading(picked[:, 3]))

    def bounds(self) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax over all lanes of the network."""
        return self._bounds

    def close(self) -> None:
        """Shut SUMO down fully (idempotent) so that another libsumo simulation can start in this process."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(*self._errors):
            self._api.close()
        if SumoMobility._libsumo_owner is self:
            SumoMobility._libsumo_owner = None
        self._error_log.unlink(missing_ok=True)

    def __enter__(self) -> SumoMobility:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
