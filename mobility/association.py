"""Serving-RSU selection with a layer-3 RSRP filter, hysteresis and time-to-trigger (the LTE/NR A3 event),
vectorised over vehicles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobility.errors import MobilityError
from mobility.rsu import Links

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

    RSRP of the links in coverage passes the layer-3 filter (filter_k, per link, in dB as 38.331 filters
    logarithmic measurements) before the A3 rules. A link's filter starts at its first measurement (F_0 = M_1,
    38.331 §5.5.3.2) whenever the link appears: a new vehicle, or one entering an RSU's coverage, since a vehicle
    measures only the cells it can hear; out-of-coverage links hold no state, which keeps a city's cost to the
    few links each vehicle has. A handover between two RSUs interrupts the
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
        self._filtered = np.empty(0)  # layer-3 filtered RSRP of each link in dBm
        self._links = Links.every(np.zeros((0, 0)))  # the links of the last update
        self._match: tuple[np.ndarray, ...] | None = None  # the last _align: (ids, last ids, its answer)
        self._ids = np.array([], dtype=str)
        self._serving = np.empty(0, dtype=np.int64)
        self._candidate = np.empty(0, dtype=np.int64)  # A3 target being timed, -1 if none
        self._since_s = np.empty(0, dtype=np.float64)  # when the A3 condition started holding for _candidate
        self._until_s = np.empty(0, dtype=np.float64)  # end of the current handover interruption (-inf if none)

    def update(self, time_s: float, ids: np.ndarray, links: Links,
               rsrp_dbm: np.ndarray) -> tuple[np.ndarray, list[HandoverEvent]]:
        """Apply attach / coverage-loss / A3 rules for this instant, given the RSRP (L,) of each link in coverage;
        return serving (n,) int64 aligned with ids and the handover events, in id order."""
        ids, rsrp_dbm = self._check(time_s, ids, links, rsrp_dbm)
        if self._filter_k:
            at = np.full(len(links), -1, dtype=np.int64)
            if len(self._ids) and len(ids):
                known, _, every = self._align(ids)
                at = links.carried_from(self._links, known, every)
            a = l3_filter_weight(self._filter_k, time_s - self._time_s)
            carried = at >= 0
            rsrp_dbm = rsrp_dbm.copy()  # held as the filter's state
            rsrp_dbm[carried] = (1.0 - a) * self._filtered[at[carried]] + a * rsrp_dbm[carried]
            self._filtered = rsrp_dbm
        self._links = links
        n = len(ids)
        rows = np.arange(n)
        serving = self._lookup(ids, self._serving, -1)
        candidate = self._lookup(ids, self._candidate, -1)
        since = self._lookup(ids, self._since_s, np.nan)
        until = self._lookup(ids, self._until_s, -np.inf)

        # The strongest covering RSU of each vehicle (the lowest index on a tie), -1 where none covers it.
        best, best_rsrp = np.full(n, -1, dtype=np.int64), np.full(n, -np.inf)
        order = np.lexsort((-rsrp_dbm, links.row))  # by vehicle, strongest first; stable, so RSU order on ties
        first = order[np.r_[True, links.row[order][1:] != links.row[order][:-1]]] if len(links) else order
        best[links.row[first]], best_rsrp[links.row[first]] = links.rsu[first], rsrp_dbm[first]

        serving_link = links.find(rows, serving)
        serving_ok = serving_link >= 0
        # Unserved, or lost the serving RSU's coverage: take the strongest covering RSU now (or none).
        new = np.where(serving_ok, serving, best)

        # A3: a covered vehicle hands over once the best RSU beats the serving one by the margin for ttt.
        a3 = serving_ok & (best != serving)
        a3[a3] = best_rsrp[a3] - rsrp_dbm[serving_link[a3]] > self._hysteresis_db
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

    def _check(self, time_s: float, ids: np.ndarray, links: Links,
               rsrp_dbm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if time_s < self._time_s:
            raise MobilityError(
                f"Association.update: time_s={time_s} is before the previous update "
                f"({self._time_s}); updates must be monotone"
            )
        ids = np.asarray(ids, dtype=str)
        rsrp_dbm = np.asarray(rsrp_dbm, dtype=np.float64)
        if ids.ndim != 1:
            raise MobilityError(f"Association.update: ids must be 1-D, got shape {ids.shape}")
        if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
            raise MobilityError(
                "Association.update: ids must be unique and sorted ascending (np.sort), as in Snapshot.ids"
            )
        if rsrp_dbm.shape != (len(links),):
            raise MobilityError(f"Association.update: rsrp_dbm must have one entry per link ({len(links)}), got "
                                f"shape {rsrp_dbm.shape}")
        if len(links) and links.row[-1] >= len(ids):
            raise MobilityError(f"Association.update: links name vehicle row {links.row[-1]} of {len(ids)} ids")
        return ids, rsrp_dbm
