"""Serving-RSU selection with a layer-3 RSRP filter, hysteresis and time-to-trigger (the LTE/NR A3 event),
vectorised over vehicles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobility.errors import MobilityError

# Tolerance on the time-to-trigger comparison, so that k updates of dt trigger at k*dt despite float round-off.
_TIME_EPS_S = 1e-9
# TS 38.331 §5.5.3.2: filterCoefficient k assumes one measurement every 200 ms; other rates keep its time constant.
L3_SAMPLE_PERIOD_S = 0.2
L3_FILTER_COEFFICIENTS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 17, 19)  # fc0 .. fc19 of 38.331


@dataclass(frozen=True)
class HandoverEvent:
    """One change of serving RSU; -1 on either side means no RSU (attach or detach). interruption_s is how long
    the vehicle cannot transmit after it (a handover between two RSUs; attach and detach cost none)."""

    time_s: float
    vehicle: str
    from_rsu: int
    to_rsu: int
    interruption_s: float = 0.0


def l3_filter_weight(k: int, elapsed_s: float) -> float:
    """Weight a of a new measurement in F = (1 − a)·F + a·M after elapsed_s: a = 1/2^(k/4) per 200 ms sample
    (TS 38.331 §5.5.3.2), compounded over elapsed_s / 200 ms so the filter's time constant does not depend on how
    often it is updated; 1 (no filtering) for k = 0."""
    return 1.0 - (1.0 - 2.0 ** (-k / 4.0)) ** (elapsed_s / L3_SAMPLE_PERIOD_S)


def ping_pong_fraction(events: list[HandoverEvent], window_s: float = 10.0) -> float:
    """Share of handovers (RSU to RSU) that take a vehicle back to the RSU it left less than window_s before."""
    last: dict[str, HandoverEvent] = {}
    handovers = returns = 0
    for event in events:
        if event.from_rsu < 0 or event.to_rsu < 0:
            last.pop(event.vehicle, None)
            continue
        previous = last.get(event.vehicle)
        handovers += 1
        returns += bool(previous and previous.from_rsu == event.to_rsu and event.time_s - previous.time_s < window_s)
        last[event.vehicle] = event
    return returns / handovers if handovers else 0.0


class Association:
    """Keeps each vehicle's serving RSU between updates; state lives in arrays aligned to the sorted ids.

    RSRP passes the layer-3 filter (filter_k, per link, in dB as 38.331 filters logarithmic measurements; a new
    vehicle's filter starts at its first measurement) before the A3 rules. A handover between two RSUs interrupts the
    vehicle's link for interruption_s (detach, random access and path switch at the target); `interrupted(time_s)`
    says who is still inside that gap."""

    def __init__(self, *, hysteresis_db: float, time_to_trigger_s: float = 0.0, interruption_s: float = 0.0,
                 filter_k: int = 0) -> None:
        if filter_k not in L3_FILTER_COEFFICIENTS:
            raise MobilityError(f"filter_k={filter_k} must be one of 38.331's {L3_FILTER_COEFFICIENTS}")
        if not hysteresis_db >= 0:
            raise MobilityError(f"hysteresis_db={hysteresis_db} must be >= 0")
        if not time_to_trigger_s >= 0:
            raise MobilityError(f"time_to_trigger_s={time_to_trigger_s} must be >= 0")
        if not interruption_s >= 0:
            raise MobilityError(f"interruption_s={interruption_s} must be >= 0")
        self._hysteresis_db = float(hysteresis_db)
        self._interruption_s = float(interruption_s)
        self._ttt_s = float(time_to_trigger_s)
        self._filter_k = filter_k
        self._time_s = -np.inf
        self._filtered = np.empty((0, 0))  # layer-3 filtered RSRP (n, m) in dBm
        self._match: tuple[np.ndarray, ...] | None = None  # the last _align: (ids, last ids, its answer)
        self._ids = np.array([], dtype=str)
        self._serving = np.empty(0, dtype=np.int64)
        self._candidate = np.empty(0, dtype=np.int64)  # A3 target being timed, -1 if none
        self._since_s = np.empty(0, dtype=np.float64)  # when the A3 condition started holding for _candidate
        self._until_s = np.empty(0, dtype=np.float64)  # end of the current handover interruption (-inf if none)

    def update(
        self, time_s: float, ids: np.ndarray, rsrp_dbm: np.ndarray, in_coverage: np.ndarray
    ) -> tuple[np.ndarray, list[HandoverEvent]]:
        """Apply attach / coverage-loss / A3 rules for this instant; return serving (n,) int64 aligned with ids and
        the handover events, in id order."""
        ids, rsrp_dbm, in_coverage = self._check(time_s, ids, rsrp_dbm, in_coverage)
        if self._filter_k:
            if self._filtered.shape[1:] == rsrp_dbm.shape[1:] and len(self._ids) and len(ids):
                known, _, every = self._align(ids)
                a = l3_filter_weight(self._filter_k, time_s - self._time_s)
                # In place over every row (a newcomer's row is then overwritten: its filter starts at its first
                # measurement): far cheaper at city scale than boolean-mask indexing of (n, m) arrays.
                filtered = self._filtered.take(every, axis=0)
                filtered *= 1.0 - a
                filtered += a * rsrp_dbm
                filtered[~known] = rsrp_dbm[~known]
                rsrp_dbm = filtered
            else:
                rsrp_dbm = rsrp_dbm.copy()  # held as the filter's state
            self._filtered = rsrp_dbm
        n, m = rsrp_dbm.shape
        rows = np.arange(n)
        serving = self._lookup(ids, self._serving, -1)
        candidate = self._lookup(ids, self._candidate, -1)
        since = self._lookup(ids, self._since_s, np.nan)
        until = self._lookup(ids, self._until_s, -np.inf)

        if m == 0:
            best = np.full(n, -1, dtype=np.int64)
        else:
            masked = np.where(in_coverage, rsrp_dbm, -np.inf)
            best = np.where(in_coverage.any(axis=1), np.argmax(masked, axis=1), -1).astype(np.int64)

        serving_ok = serving >= 0
        serving_ok[serving_ok] = in_coverage[rows[serving_ok], serving[serving_ok]]
        # Unserved, or lost the serving RSU's coverage: take the strongest covering RSU now (or none).
        new = np.where(serving_ok, serving, best)

        # A3: a covered vehicle hands over once the best RSU beats the serving one by the margin for ttt.
        a3 = serving_ok & (best != serving)
        a3[a3] = rsrp_dbm[rows[a3], best[a3]] - rsrp_dbm[rows[a3], serving[a3]] > self._hysteresis_db
        restart = a3 & (candidate != best)
        since[restart] = time_s
        candidate = np.where(a3, best, -1)
        fire = a3 & (time_s - since >= self._ttt_s - _TIME_EPS_S)
        new[fire] = best[fire]
        candidate[fire] = -1

        changed = new != serving
        handover = changed & (serving >= 0) & (new >= 0)
        # A vehicle dropped to no RSU is not transmitting anyway; re-attaching later starts clean.
        until[handover] = time_s + self._interruption_s
        until[new < 0] = -np.inf
        events = [
            HandoverEvent(float(time_s), str(ids[i]), int(serving[i]), int(new[i]),
                          self._interruption_s if handover[i] else 0.0)
            for i in np.flatnonzero(changed)
        ]
        self._time_s = float(time_s)
        self._ids, self._serving, self._candidate, self._since_s, self._until_s = ids, new, candidate, since, until
        return new.copy(), events

    def interrupted(self, time_s: float) -> np.ndarray:
        """(n,) bool aligned with the last update's ids: True while a vehicle's handover interruption lasts at
        time_s (interruption [t, t + interruption_s) from the handover time t), so it must not transmit."""
        return time_s < self._until_s - _TIME_EPS_S

    def interrupted_until(self, ids: np.ndarray) -> np.ndarray:
        """End time of each vehicle's current handover interruption (-inf if none), for ids in any order; a
        Transfer process can wait until then instead of polling every tick."""
        return self._lookup(np.asarray(ids, dtype=str), self._until_s, -np.inf)

    def candidates(self) -> np.ndarray:
        """(n,) the RSU each vehicle of the last update is timing a handover to (A3 holds), -1 if none."""
        return self._candidate.copy()

    def serving_of(self, ids: np.ndarray) -> np.ndarray:
        """Current serving RSU for these ids (any order), -1 for ids never seen or gone at the last update."""
        return self._lookup(np.asarray(ids, dtype=str), self._serving, -1)

    def _lookup(self, ids: np.ndarray, column: np.ndarray, missing: float) -> np.ndarray:
        """Realign a state column from the last update's ids to `ids`, filling vehicles not known with `missing`."""
        out = np.full((len(ids), *column.shape[1:]), missing, dtype=column.dtype)
        if len(self._ids) == 0 or len(ids) == 0:
            return out
        known, rows, _ = self._align(ids)
        out[known] = column[rows]
        return out

    def _align(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(known, rows, every): which of `ids` the last update had, at which rows, and every id's nearest row
        (meaningless where not known); one string search per update, not per state column. Needs both id arrays
        non-empty."""
        if self._match is None or self._match[0] is not ids or self._match[1] is not self._ids:
            pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
            known = self._ids[pos] == ids
            self._match = (ids, self._ids, known, pos[known], pos)
        return self._match[2], self._match[3], self._match[4]

    def _check(
        self, time_s: float, ids: np.ndarray, rsrp_dbm: np.ndarray, in_coverage: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if time_s < self._time_s:
            raise MobilityError(
                f"Association.update: time_s={time_s} is before the previous update "
                f"({self._time_s}); updates must be monotone"
            )
        ids = np.asarray(ids, dtype=str)
        rsrp_dbm = np.asarray(rsrp_dbm, dtype=np.float64)
        in_coverage = np.asarray(in_coverage)
        if ids.ndim != 1:
            raise MobilityError(f"Association.update: ids must be 1-D, got shape {ids.shape}")
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise MobilityError(
                "Association.update: ids must be unique and sorted ascending (np.sort), as in Snapshot.ids"
            )
        if rsrp_dbm.ndim != 2 or rsrp_dbm.shape[0] != len(ids):
            raise MobilityError(f"Association.update: rsrp_dbm must have shape (n={len(ids)}, m), got {rsrp_dbm.shape}")
        if in_coverage.shape != rsrp_dbm.shape or in_coverage.dtype != np.bool_:
            raise MobilityError(
                f"Association.update: in_coverage must be a bool array of shape {rsrp_dbm.shape} "
                f"like rsrp_dbm, got {in_coverage.dtype} {in_coverage.shape}"
            )
        return ids, rsrp_dbm, in_coverage
