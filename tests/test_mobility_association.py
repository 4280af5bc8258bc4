"""Serving-RSU association: attach, coverage loss, A3 hysteresis and time-to-trigger, realignment."""

import numpy as np
import pytest

from cosim.channel import Shadowing
from mobility.association import Association, HandoverEvent, l3_filter_weight, ping_pong_fraction
from mobility.config import RsuConfig
from mobility.errors import MobilityError
from mobility.rsu import Links


def _ids(*names: str) -> np.ndarray:
    return np.array(names, dtype=str)


def _covered(distance: np.ndarray, in_coverage: np.ndarray) -> Links:
    """The links where in_coverage (n, m) holds."""
    row, rsu = np.nonzero(in_coverage)
    return Links(row, rsu, distance[row, rsu], distance.shape[1])


def _links(rsrp: np.ndarray, in_coverage: np.ndarray) -> tuple[Links, np.ndarray]:
    """Dense (n, m) RSRP and coverage -> the links in coverage and their RSRP, as Association.update takes them."""
    links = _covered(np.zeros(rsrp.shape), in_coverage)
    return links, rsrp[links.row, links.rsu]


def _cov(rsrp: list[list[float]]) -> tuple[Links, np.ndarray]:
    """rsrp with NaN meaning out of coverage -> (links, their rsrp)."""
    r = np.array(rsrp, dtype=np.float64)
    return _links(r, ~np.isnan(r))


def test_attach_to_strongest_covering_rsu_and_ignore_uncovered_strength():
    assoc = Association(hysteresis_db=3.0)
    # v2 hears RSU 1 loudest but is only covered by RSU 0; v3 is covered by none.
    rsrp = np.array([[-80.0, -70.0], [-60.0, -50.0], [-90.0, -95.0]])
    cov = np.array([[True, True], [True, False], [False, False]])
    serving, events = assoc.update(0.0, _ids("v1", "v2", "v3"), *_links(rsrp, cov))
    assert serving.dtype == np.int64
    np.testing.assert_array_equal(serving, [1, 0, -1])
    assert events == [HandoverEvent(0.0, "v1", -1, 1), HandoverEvent(0.0, "v2", -1, 0)]


def test_hysteresis_blocks_switch_inside_margin_and_allows_beyond():
    assoc = Association(hysteresis_db=3.0)
    ids = _ids("a")
    assoc.update(0.0, ids, *_cov([[-70.0, -80.0]]))
    serving, events = assoc.update(1.0, ids, *_cov([[-70.0, -67.5]]))  # 2.5 dB better: inside margin
    assert serving.tolist() == [0] and events == []
    serving, events = assoc.update(2.0, ids, *_cov([[-70.0, -67.0]]))  # exactly 3 dB: not "more than"
    assert serving.tolist() == [0] and events == []
    serving, events = assoc.update(3.0, ids, *_cov([[-70.0, -66.9]]))
    assert serving.tolist() == [1]
    assert events == [HandoverEvent(3.0, "a", 0, 1)]


@pytest.mark.parametrize("ttt_updates", [0, 1, 2, 3])
def test_time_to_trigger_delays_switch_by_exact_number_of_updates(ttt_updates):
    # Times k * 0.1 are inexact in binary (0.4 - 0.3 < 0.1): the switch must still come after exactly ttt_updates.
    dt, start = 0.1, 3
    assoc = Association(hysteresis_db=1.0, time_to_trigger_s=ttt_updates * dt)
    ids = _ids("a")
    switched_at = None
    for k in range(15):
        rsrp = [[-70.0, -60.0]] if k >= start else [[-70.0, -90.0]]
        serving, events = assoc.update(k * dt, ids, *_cov(rsrp))
        if k > 0 and events:
            switched_at = k
            assert events == [HandoverEvent(k * dt, "a", 0, 1)]
            break
        assert serving.tolist() == [0]
    assert switched_at == start + ttt_updates


def test_time_to_trigger_timer_resets_when_condition_breaks():
    assoc = Association(hysteresis_db=1.0, time_to_trigger_s=2.0)
    ids = _ids("a")
    assoc.update(0.0, ids, *_cov([[-70.0, -90.0]]))
    assert assoc.update(1.0, ids, *_cov([[-70.0, -60.0]]))[1] == []  # timer starts at 1
    assert assoc.update(2.0, ids, *_cov([[-70.0, -70.5]]))[1] == []  # condition broken: reset
    assert assoc.update(3.0, ids, *_cov([[-70.0, -60.0]]))[1] == []  # restarts at 3
    assert assoc.update(4.0, ids, *_cov([[-70.0, -60.0]]))[1] == []  # would have fired without the reset
    assert assoc.update(5.0, ids, *_cov([[-70.0, -60.0]]))[1] == [HandoverEvent(5.0, "a", 0, 1)]


def test_time_to_trigger_timer_resets_when_best_candidate_changes():
    assoc = Association(hysteresis_db=1.0, time_to_trigger_s=2.0)
    ids = _ids("a")
    assoc.update(0.0, ids, *_cov([[-70.0, -90.0, -90.0]]))
    assert assoc.update(1.0, ids, *_cov([[-70.0, -60.0, -65.0]]))[1] == []  # candidate 1 from t=1
    assert assoc.update(2.0, ids, *_cov([[-70.0, -65.0, -60.0]]))[1] == []  # candidate 2 from t=2
    assert assoc.update(3.0, ids, *_cov([[-70.0, -65.0, -60.0]]))[1] == []
    assert assoc.update(4.0, ids, *_cov([[-70.0, -65.0, -60.0]]))[1] == [HandoverEvent(4.0, "a", 0, 2)]


def test_coverage_loss_moves_at_once_or_detaches():
    assoc = Association(hysteresis_db=10.0, time_to_trigger_s=5.0)
    ids = _ids("a", "b")
    assoc.update(0.0, ids, *_cov([[-70.0, -80.0], [-70.0, np.nan]]))
    # Serving RSU 0 lost for both: a moves to RSU 1 despite hysteresis and ttt, b has nowhere to go.
    serving, events = assoc.update(1.0, ids, *_cov([[np.nan, -85.0], [np.nan, np.nan]]))
    np.testing.assert_array_equal(serving, [1, -1])
    assert events == [HandoverEvent(1.0, "a", 0, 1), HandoverEvent(1.0, "b", 0, -1)]
    # b re-enters coverage: attaches again at once.
    serving, events = assoc.update(2.0, ids, *_cov([[np.nan, -85.0], [np.nan, -99.0]]))
    np.testing.assert_array_equal(serving, [1, 1])
    assert events == [HandoverEvent(2.0, "b", -1, 1)]


def test_vehicles_appearing_and_leaving_keep_their_own_state():
    assoc = Association(hysteresis_db=3.0)
    assoc.update(0.0, _ids("b", "d", "f"), *_cov([[-70.0, -80.0], [-80.0, -70.0], [-70.0, -80.0]]))
    # "a", "c", "e" appear around the survivors, "f" leaves. Same rsrp for all: only newcomers attach, and the
    # survivors keep RSUs that are no longer the strongest (within hysteresis), so they must be realigned by id.
    ids = _ids("a", "b", "c", "d", "e")
    serving, events = assoc.update(1.0, ids, *_cov([[-75.0, -74.0]] * 5))
    np.testing.assert_array_equal(serving, [1, 0, 1, 1, 1])
    assert [(e.vehicle, e.from_rsu, e.to_rsu) for e in events] == [("a", -1, 1), ("c", -1, 1), ("e", -1, 1)]
    np.testing.assert_array_equal(assoc.serving_of(_ids("f", "b", "zz", "d")), [-1, 0, -1, 1])
    # "f" comes back: it was forgotten, so it attaches afresh (an attach event, not a handover from its old RSU).
    serving, events = assoc.update(2.0, _ids("b", "f"), *_cov([[-70.0, -80.0], [-80.0, -70.0]]))
    np.testing.assert_array_equal(serving, [0, 1])
    assert events == [HandoverEvent(2.0, "f", -1, 1)]


def test_pending_timer_is_dropped_with_a_leaving_vehicle():
    assoc = Association(hysteresis_db=1.0, time_to_trigger_s=1.0)
    assoc.update(0.0, _ids("a"), *_cov([[-70.0, -90.0]]))
    assoc.update(1.0, _ids("a"), *_cov([[-70.0, -60.0]]))  # timer starts
    assoc.update(1.5, _ids("b"), *_cov([[-70.0, -90.0]]))  # a leaves
    serving, events = assoc.update(2.0, _ids("a", "b"), *_cov([[-70.0, -60.0], [-70.0, -90.0]]))
    # a re-attaches to the strongest RSU directly; no stale timer survives to produce a second event.
    assert events == [HandoverEvent(2.0, "a", -1, 1)]
    np.testing.assert_array_equal(serving, [1, 0])


def _drive_past(hysteresis_db: float, noise_db: float) -> list[HandoverEvent]:
    """One vehicle drives along x from 0 to 1000 m past RSUs at x = 250 and 750 (overlapping coverage)."""
    rng = np.random.default_rng(7)
    rsu_x = np.array([250.0, 750.0])
    assoc = Association(hysteresis_db=hysteresis_db)
    events: list[HandoverEvent] = []
    for t in np.arange(0.0, 100.0, 0.5):
        x = 10.0 * t
        d = np.hypot(x - rsu_x, 20.0)
        rsrp = 20.0 - 30.0 - 35.0 * np.log10(d) + noise_db * rng.standard_normal(2)
        events += assoc.update(float(t), _ids("car"), *_links(rsrp[None, :], (d <= 600.0)[None, :]))[1]
    return events


def test_straight_drive_past_two_rsus_hands_over_exactly_once_with_hysteresis():
    events = _drive_past(hysteresis_db=6.0, noise_db=2.0)
    assert [(e.from_rsu, e.to_rsu) for e in events] == [(-1, 0), (0, 1)]
    # The handover happens past the midpoint (where RSU 1 is stronger by the margin), not before it.
    assert 10.0 * events[1].time_s > 500.0


def test_straight_drive_without_hysteresis_ping_pongs_under_noise():
    # Guards the test above: the same noisy drive without a margin switches back and forth.
    assert len(_drive_past(hysteresis_db=0.0, noise_db=2.0)) > 3


@pytest.mark.parametrize(
    ("ids", "links", "rsrp", "match"),
    [
        (["b", "a"], Links.every(np.zeros((2, 1))), np.zeros(2), "sorted"),
        (["a", "a"], Links.every(np.zeros((2, 1))), np.zeros(2), "unique"),
        (["a"], Links.every(np.zeros((1, 2))), np.zeros((1, 2)), "rsrp_dbm"),
        (["a"], Links.every(np.zeros((2, 1))), np.zeros(2), "row 1 of 1 ids"),
    ],
)
def test_malformed_input_is_rejected_with_the_field_named(ids, links, rsrp, match):
    with pytest.raises(MobilityError, match=match):
        Association(hysteresis_db=1.0).update(0.0, np.array(ids), links, rsrp)


def test_time_must_not_go_back_and_parameters_must_be_valid():
    assoc = Association(hysteresis_db=1.0)
    assoc.update(1.0, _ids("a"), *_cov([[-70.0]]))
    with pytest.raises(MobilityError, match="monotone"):
        assoc.update(0.5, _ids("a"), *_cov([[-70.0]]))
    with pytest.raises(MobilityError, match="hysteresis_db"):
        Association(hysteresis_db=-1.0)
    with pytest.raises(MobilityError, match="time_to_trigger_s"):
        Association(hysteresis_db=1.0, time_to_trigger_s=-0.1)


def test_no_rsus_and_no_vehicles():
    assoc = Association(hysteresis_db=1.0)
    serving, events = assoc.update(0.0, _ids("a"), *_links(np.empty((1, 0)), np.empty((1, 0), bool)))
    assert serving.tolist() == [-1] and events == []
    serving, events = assoc.update(1.0, _ids(), *_links(np.empty((0, 2)), np.empty((0, 2), bool)))
    assert serving.shape == (0,) and events == []


def test_handover_interrupts_transmission_for_the_configured_time_and_attach_does_not():
    assoc = Association(hysteresis_db=1.0, interruption_s=0.3)
    ids = _ids("a", "b")
    _, events = assoc.update(0.0, ids, *_cov([[-70.0, -90.0], [-70.0, -90.0]]))
    assert all(e.interruption_s == 0.0 for e in events)  # attaching is not a handover
    assert assoc.interrupted(0.0).tolist() == [False, False]
    _, events = assoc.update(1.0, ids, *_cov([[-70.0, -60.0], [-70.0, -90.0]]))
    assert events == [HandoverEvent(1.0, "a", 0, 1, interruption_s=0.3)]
    assert assoc.interrupted(1.0).tolist() == [True, False]
    assert assoc.interrupted(1.2).tolist() == [True, False]
    assert assoc.interrupted(1.3).tolist() == [False, False]  # the gap is [1.0, 1.3)
    np.testing.assert_allclose(assoc.interrupted_until(_ids("b", "a", "zz")), [-np.inf, 1.3, -np.inf])
    # Still interrupted after the next update, realigned to the new ids (a newcomer "0" sorts first).
    assoc.update(1.1, _ids("0", "a", "b"), *_cov([[-70.0, -90.0], [-70.0, -60.0], [-70.0, -90.0]]))
    assert assoc.interrupted(1.1).tolist() == [False, True, False]
    # Losing all coverage ends the interruption: there is nothing to transmit to anyway.
    assoc.update(1.2, _ids("a"), *_cov([[np.nan, np.nan]]))
    assert assoc.interrupted(1.2).tolist() == [False]


def test_interruption_must_be_non_negative():
    with pytest.raises(MobilityError, match="interruption_s"):
        Association(hysteresis_db=1.0, interruption_s=-1.0)


def test_l3_filter_weight_follows_38331_and_keeps_its_time_constant_at_any_update_rate():
    assert l3_filter_weight(0, 0.2) == 1.0  # k = 0: no filtering
    assert l3_filter_weight(4, 0.2) == pytest.approx(0.5)  # a = 1/2^(4/4) per 200 ms sample
    assert l3_filter_weight(8, 0.2) == pytest.approx(0.25)
    # Two updates 0.1 s apart leave the same memory as one 0.2 s apart: (1 − a_0.1)² = 1 − a_0.2.
    assert (1.0 - l3_filter_weight(11, 0.1)) ** 2 == pytest.approx(1.0 - l3_filter_weight(11, 0.2))


def test_filtered_rsrp_moves_a_fraction_of_the_way_and_starts_at_the_first_measurement():
    assoc = Association(hysteresis_db=3.0, filter_k=4)
    assoc.update(0.0, _ids("a"), *_cov([[-70.0, -80.0]]))  # the filter starts at -70 / -80, not at 0
    # Each 200 ms update with a = 1/2 halves the gap to RSU 1's new -64 dBm: -72, -68, -66.
    serving, events = assoc.update(0.2, _ids("a"), *_cov([[-70.0, -64.0]]))  # -72: still weaker than RSU 0
    assert serving.tolist() == [0] and events == []
    serving, events = assoc.update(0.4, _ids("a"), *_cov([[-70.0, -64.0]]))  # -68: 2 dB better, inside the margin
    assert serving.tolist() == [0]
    serving, events = assoc.update(0.6, _ids("a"), *_cov([[-70.0, -64.0]]))  # -66: 4 dB better
    assert serving.tolist() == [1] and events == [HandoverEvent(0.6, "a", 0, 1)]


@pytest.mark.parametrize(("rsu1_at_0_2", "handover_at_0_4"), [(np.nan, True), (-80.0, False)])
def test_a_link_entering_coverage_restarts_its_filter(rsu1_at_0_2, handover_at_0_4):
    """38.331: F_0 = M_1. RSU 1 heard at -80, then out of coverage, then back at -60: its filter restarts at -60,
    10 dB above RSU 0, so the vehicle hands over at once; had it stayed in coverage, the filter would read -70."""
    assoc = Association(hysteresis_db=3.0, filter_k=4)
    assoc.update(0.0, _ids("a"), *_cov([[-70.0, -80.0]]))
    assoc.update(0.2, _ids("a"), *_cov([[-70.0, rsu1_at_0_2]]))
    serving, events = assoc.update(0.4, _ids("a"), *_cov([[-70.0, -60.0]]))
    assert serving.tolist() == ([1] if handover_at_0_4 else [0])
    assert events == ([HandoverEvent(0.4, "a", 0, 1)] if handover_at_0_4 else [])


def _shadowed_route(filter_k: int, seed: int) -> list[HandoverEvent]:
    """40 cars along a road past RSUs 500 m apart, with 6 dB shadowing correlated over 20 m (Gudmundson), ticks of
    0.5 s, 3 dB hysteresis and 0.5 s time-to-trigger: the Bologna scenario's settings."""
    shadowing = Shadowing(6.0, 20.0, np.random.default_rng(seed))
    rsu_x = np.array([250.0, 750.0, 1250.0])
    assoc = Association(hysteresis_db=3.0, time_to_trigger_s=0.5, filter_k=filter_k)
    ids = np.array([f"car{i:02d}" for i in range(40)])
    events: list[HandoverEvent] = []
    for t in np.arange(0.0, 150.0, 0.5):
        x = 10.0 * t - 10.0 * np.arange(len(ids))
        d = np.hypot(x[:, None] - rsu_x, 20.0)
        links = _covered(d, d <= 600.0)  # shadowing and filters live on links in coverage, as in the World
        shadow = shadowing.update(ids, np.column_stack([x, np.full(len(ids), 20.0)]), links)
        events += assoc.update(float(t), ids, links, -8.0 - 35.0 * np.log10(links.distance_2d_m) + shadow)[1]
    return events


def test_the_l3_filter_cuts_ping_pong_on_a_shadowed_route():
    """Averaged over four shadowing draws: one route's fraction varies by about ±0.1."""
    raw, filtered = ([_shadowed_route(k, seed) for seed in range(4)] for k in (0, RsuConfig().l3_filter_k))
    raw_fraction = np.mean([ping_pong_fraction(events) for events in raw])
    assert raw_fraction > 0.3  # without the filter, a third of handovers or more go straight back
    assert np.mean([ping_pong_fraction(events) for events in filtered]) < 0.65 * raw_fraction
    for events in filtered:
        assert sum(e.from_rsu >= 0 and e.to_rsu >= 0 for e in events) >= 80  # every car still crosses both borders


def test_ping_pong_fraction_counts_returns_within_the_window():
    events = [HandoverEvent(0.0, "a", -1, 0), HandoverEvent(1.0, "a", 0, 1), HandoverEvent(5.0, "a", 1, 0),
              HandoverEvent(30.0, "a", 0, 1), HandoverEvent(41.0, "a", 1, 0), HandoverEvent(2.0, "b", 0, 1)]
    assert ping_pong_fraction(events) == pytest.approx(1 / 5)  # only 1 -> 0 at 5 s returns within 10 s
    assert ping_pong_fraction([]) == 0.0
