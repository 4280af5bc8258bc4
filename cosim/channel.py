"""Large- and small-scale channel models, vectorised over vehicle–RSU links (pure numpy, no SimPy).

Path loss follows 3GPP TR 38.901 V17 (UMi street canyon, UMa; RSU = BS, vehicle = UT), 3GPP TR 37.885 V15
(V2V highway and urban, also the model for UE-type RSUs) or the seeds' power law. Shadowing and the LOS state are
spatially consistent along each vehicle's path; fast fading is block (i.i.d. per draw) or time-correlated with a
Jakes autocorrelation J0(2π f_D τ) that follows each vehicle's speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

from cosim.align import realign, realign_links
from mobility.rsu import Links

SPEED_OF_LIGHT_MPS = 299_792_458.0
StandardModel = Literal["umi", "uma", "v2v-highway", "v2v-urban"]
STANDARD_MODELS: tuple[StandardModel, ...] = ("umi", "uma", "v2v-highway", "v2v-urban")
MIN_DISTANCE_2D_M = 10.0  # TR 38.901 Table 7.4.1-1: the UMi/UMa formulas hold for d_2D >= 10 m
V2V_BLOCKER_HEIGHT_M = 1.6  # TR 37.885 §6.1.2: vehicle types 1 and 2 are 1.6 m tall (type 3, trucks: 3 m)
V2V_NLOS_SHADOWING_STD_DB = 4.0  # TR 37.885 Table 6.2.1-1: urban NLOS (blocked by buildings)


def db_to_linear(db: np.ndarray | float) -> np.ndarray:
    return np.power(10.0, np.asarray(db) / 10.0)


def noise_psd_w_per_hz(psd_dbm_per_hz: float, noise_figure_db: float) -> float:
    """Thermal noise PSD raised by the receiver's noise figure, in W/Hz."""
    return float(db_to_linear(psd_dbm_per_hz + noise_figure_db)) * 1e-3


def doppler_hz(speed_mps: np.ndarray | float, carrier_hz: float) -> np.ndarray:
    """Maximum Doppler shift f_D = v·f_c/c, which sets how fast small-scale fading decorrelates."""
    return np.asarray(speed_mps, dtype=float) * carrier_hz / SPEED_OF_LIGHT_MPS


# ---------------------------------------------------------------------------------------------------- path loss


def simple_pathloss_db(distance_m: np.ndarray, reference_loss_db: float, reference_distance_m: float,
                       exponent: float) -> np.ndarray:
    """PL(d) = PL0 + 10·α·log10(d/d0): the power-law model PL0·(d/d0)^-α of the seed papers, in dB.

    Distances below d0 are clamped to d0 so the model never predicts gain."""
    loss = np.maximum(np.asarray(distance_m, dtype=float), reference_distance_m)  # in place from here on
    if reference_distance_m != 1.0:  # dividing by 1 changes nothing
        loss /= reference_distance_m
    np.log10(loss, out=loss)
    loss *= 10.0 * exponent
    loss += reference_loss_db
    return loss


def breakpoint_distance_m(bs_height_m: np.ndarray | float, ut_height_m: np.ndarray | float, carrier_hz: float,
                          environment_height_m: float = 1.0) -> np.ndarray:
    """d'_BP = 4·h'_BS·h'_UT·f_c/c with effective heights h' = h − h_E, beyond which LOS loss grows as d^4.

    TR 38.901 Table 7.4.1-1 note 1 (c = 3.0e8 m/s, f_c in Hz). h_E = 1 m for UMi; for UMa the standard draws
    h_E ≠ 1 m only with probability C/(1+C), and C = 0 for h_UT < 13 m, so h_E = 1 m is exact for vehicles."""
    h_bs = np.asarray(bs_height_m, dtype=float) - environment_height_m
    h_ut = np.asarray(ut_height_m, dtype=float) - environment_height_m
    return 4.0 * h_bs * h_ut * carrier_hz / 3.0e8


def _distances(distance_2d_m: np.ndarray, bs_height_m: np.ndarray | float,
               ut_height_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(d_2D clamped to the tables' 10 m minimum, d_3D) for BS–UT links."""
    d_2d = np.maximum(np.asarray(distance_2d_m, dtype=float), MIN_DISTANCE_2D_M)
    return d_2d, np.hypot(d_2d, np.asarray(bs_height_m) - np.asarray(ut_height_m))


def _two_slope_los_db(d_2d: np.ndarray, d_3d: np.ndarray, bs_height_m: np.ndarray | float,
                      ut_height_m: np.ndarray | float, carrier_hz: float, intercept_db: float, near_slope: float,
                      far_correction: float) -> np.ndarray:
    """TR 38.901 Table 7.4.1-1 LOS form shared by UMi and UMa:
    PL1 = A + B·log10(d_3D) + 20·log10(f_c) up to d'_BP,
    PL2 = A + 40·log10(d_3D) + 20·log10(f_c) − C·log10(d'_BP² + (h_BS − h_UT)²) beyond (f_c in GHz)."""
    d_bp = breakpoint_distance_m(bs_height_m, ut_height_m, carrier_hz)
    frequency_db = 20.0 * math.log10(carrier_hz / 1e9)
    near = intercept_db + near_slope * np.log10(d_3d) + frequency_db
    far = (intercept_db + 40.0 * np.log10(d_3d) + frequency_db
           - far_correction * np.log10(d_bp**2 + (np.asarray(bs_height_m) - np.asarray(ut_height_m)) ** 2))
    return np.where(d_2d <= d_bp, near, far)


def umi_pathloss_db(distance_2d_m: np.ndarray, bs_height_m: np.ndarray | float, ut_height_m: np.ndarray | float,
                    carrier_hz: float, los: np.ndarray | bool) -> np.ndarray:
    """UMi street canyon path loss (dB) of TR 38.901 Table 7.4.1-1 for each link's LOS state."""
    d_2d, d_3d = _distances(distance_2d_m, bs_height_m, ut_height_m)
    # TR 38.901 Table 7.4.1-1, UMi LOS: PL1 = 32.4 + 21 log10(d_3D) + 20 log10(f_c); PL2 with 40 and −9.5
    los_db = _two_slope_los_db(d_2d, d_3d, bs_height_m, ut_height_m, carrier_hz, 32.4, 21.0, 9.5)
    # TR 38.901 Table 7.4.1-1, UMi NLOS: max(PL_LOS, 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c) − 0.3 (h_UT − 1.5))
    nlos_db = (35.3 * np.log10(d_3d) + 22.4 + 21.3 * math.log10(carrier_hz / 1e9)
               - 0.3 * (np.asarray(ut_height_m) - 1.5))
    return np.where(los, los_db, np.maximum(los_db, nlos_db))


def uma_pathloss_db(distance_2d_m: np.ndarray, bs_height_m: np.ndarray | float, ut_height_m: np.ndarray | float,
                    carrier_hz: float, los: np.ndarray | bool) -> np.ndarray:
    """UMa path loss (dB) of TR 38.901 Table 7.4.1-1 for each link's LOS state."""
    d_2d, d_3d = _distances(distance_2d_m, bs_height_m, ut_height_m)
    # TR 38.901 Table 7.4.1-1, UMa LOS: PL1 = 28.0 + 22 log10(d_3D) + 20 log10(f_c); PL2 with 40 and −9
    los_db = _two_slope_los_db(d_2d, d_3d, bs_height_m, ut_height_m, carrier_hz, 28.0, 22.0, 9.0)
    # TR 38.901 Table 7.4.1-1, UMa NLOS: max(PL_LOS, 13.54 + 39.08 log10(d_3D) + 20 log10(f_c) − 0.6 (h_UT − 1.5))
    nlos_db = (13.54 + 39.08 * np.log10(d_3d) + 20.0 * math.log10(carrier_hz / 1e9)
               - 0.6 * (np.asarray(ut_height_m) - 1.5))
    return np.where(los, los_db, np.maximum(los_db, nlos_db))


def v2v_pathloss_db(distance_3d_m: np.ndarray, carrier_hz: float, environment: Literal["highway", "urban"],
                    los: np.ndarray | bool, blockage_db: np.ndarray | float = 0.0) -> np.ndarray:
    """TR 37.885 V2V path loss (dB): LOS, or NLOSv (LOS loss plus the vehicle blockage loss) where `los` is False.

    Distances below 1 m are clamped (the log-distance law is not meant for the near field)."""
    d = np.maximum(np.asarray(distance_3d_m, dtype=float), 1.0)
    f_ghz = carrier_hz / 1e9
    if environment == "highway":
        # TR 37.885 Table 6.2.1-1, highway LOS: PL = 32.4 + 20 log10(d) + 20 log10(f_c)
        los_db = 32.4 + 20.0 * np.log10(d) + 20.0 * math.log10(f_ghz)
    else:
        # TR 37.885 Table 6.2.1-1, urban LOS: PL = 38.77 + 16.7 log10(d) + 18.2 log10(f_c)
        los_db = 38.77 + 16.7 * np.log10(d) + 18.2 * math.log10(f_ghz)
    # TR 37.885 Table 6.2.1-1, NLOSv: PL = PL_LOS + additional vehicle blockage loss (§6.2.1)
    return np.where(los, los_db, los_db + blockage_db)


def v2v_urban_nlos_pathloss_db(distance_3d_m: np.ndarray, carrier_hz: float) -> np.ndarray:
    """TR 37.885 urban NLOS: the link is blocked by buildings (see v2v_urban_clear_probability for how that state
    is drawn)."""
    d = np.maximum(np.asarray(distance_3d_m, dtype=float), 1.0)
    # TR 37.885 Table 6.2.1-1, urban NLOS: PL = 36.85 + 30 log10(d) + 18.9 log10(f_c)
    return 36.85 + 30.0 * np.log10(d) + 18.9 * math.log10(carrier_hz / 1e9)


def vehicle_blockage_loss_db(distance_3d_m: np.ndarray, tx_height_m: np.ndarray | float,
                             rx_height_m: np.ndarray | float, z: np.ndarray,
                             blocker_height_m: float = V2V_BLOCKER_HEIGHT_M) -> np.ndarray:
    """NLOSv blockage loss max(0, μ + σ·z) of TR 37.885 §6.2.1 for standard normal draws `z`.

    Case 1, both antennas above the blocker: 0 dB. Case 2, both below: μ = 9 + max(0, 15 log10(d) − 41), σ = 4.5.
    Case 3, otherwise: μ = 5 + max(0, 15 log10(d) − 41), σ = 4 (all in dB, d in m)."""
    low = np.minimum(tx_height_m, rx_height_m)
    high = np.maximum(tx_height_m, rx_height_m)
    ramp = np.maximum(0.0, 15.0 * np.log10(np.maximum(distance_3d_m, 1.0)) - 41.0)
    below = high < blocker_height_m
    mean = np.where(below, 9.0, 5.0) + ramp
    std = np.where(below, 4.5, 4.0)
    return np.where(low > blocker_height_m, 0.0, np.maximum(0.0, mean + std * z))


def los_probability(model: StandardModel, distance_2d_m: np.ndarray,
                    ut_height_m: np.ndarray | float = 1.5) -> np.ndarray:
    """Probability that a link at horizontal distance d_2D is in line of sight (for V2V: LOS versus NLOSv)."""
    d = np.maximum(np.asarray(distance_2d_m, dtype=float), 1e-9)
    if model in ("umi", "uma"):
        # TR 38.901 Table 7.4.2-1: 1 for d_2D <= 18 m, else 18/d_2D + exp(−d_2D/D)(1 − 18/d_2D), D = 36 m (UMi),
        # 63 m (UMa); UMa multiplies by 1 + C'(h_UT)·5/4·(d_2D/100)³·exp(−d_2D/150), C' = ((h_UT − 13)/10)^1.5
        # for 13 m < h_UT <= 23 m and 0 below.
        scale = 36.0 if model == "umi" else 63.0
        near = np.minimum(18.0 / d, 1.0)
        p = near + np.exp(-d / scale) * (1.0 - near)
        if model == "uma":
            c_ut = np.clip((np.asarray(ut_height_m, dtype=float) - 13.0) / 10.0, 0.0, None) ** 1.5
            p = p * (1.0 + c_ut * 1.25 * (d / 100.0) ** 3 * np.exp(-d / 150.0))
        return np.where(d <= 18.0, 1.0, np.minimum(p, 1.0))
    if model == "v2v-highway":
        # TR 37.885 Table 6.2.1-2, highway: min(1, a d² + b d + c) for d <= 475 m with a = 2.1013e-6, b = −0.002,
        # c = 1.0193; max(0, 0.54 − 0.001 (d − 475)) beyond
        near = np.minimum(1.0, 2.1013e-6 * d**2 - 0.002 * d + 1.0193)
        return np.where(d <= 475.0, near, np.maximum(0.0, 0.54 - 0.001 * (d - 475.0)))
    if model == "v2v-urban":
        # TR 37.885 Table 6.2.1-2, urban: min(1, 1.05·exp(−0.0114 d))
        return np.minimum(1.0, 1.05 * np.exp(-0.0114 * d))
    raise ValueError(f"unknown path-loss model {model!r}; choose from {', '.join(STANDARD_MODELS)}")


def v2v_urban_clear_probability(distance_2d_m: np.ndarray) -> np.ndarray:
    """Probability that an urban V2V/RSU link is not blocked by buildings. TR 37.885 decides that state from the
    street geometry of its urban grid (Table 6.2.1-2: "determined by the geometry"), which a road network without
    buildings does not give; we draw it with the street-canyon LOS probability of TR 38.901 Table 7.4.2-1 (UMi),
    the building-only LOS model of the same urban grid. A clear link is then LOS or NLOSv by 37.885's own P_LOS."""
    return los_probability("umi", distance_2d_m)


def pathloss_db(model: StandardModel, distance_2d_m: np.ndarray, bs_height_m: np.ndarray | float,
                ut_height_m: np.ndarray | float, carrier_hz: float, los: np.ndarray | bool,
                blockage_db: np.ndarray | float = 0.0) -> np.ndarray:
    """Path loss (dB) of `model` for given LOS states; `blockage_db` is the V2V NLOSv vehicle loss."""
    if model == "umi":
        return umi_pathloss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz, los)
    if model == "uma":
        return uma_pathloss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz, los)
    if model in ("v2v-highway", "v2v-urban"):
        d_3d = np.hypot(distance_2d_m, np.asarray(bs_height_m) - np.asarray(ut_height_m))
        return v2v_pathloss_db(d_3d, carrier_hz, "highway" if model == "v2v-highway" else "urban", los, blockage_db)
    raise ValueError(f"unknown path-loss model {model!r}; choose from {', '.join(STANDARD_MODELS)}")


def sample_pathloss_db(model: StandardModel, distance_2d_m: np.ndarray, bs_height_m: np.ndarray | float,
                       ut_height_m: np.ndarray | float, carrier_hz: float,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(loss dB, LOS) with the LOS state drawn independently per link, or its expectation when `rng` is None.

    Drawn: LOS is a 0/1 array and the V2V blockage loss is drawn too. Expected: LOS is the probability and the loss
    is that of the mean linear gain P·g_LOS + (1 − P)·g_NLOS (median blockage loss for V2V), what a planner that
    does not know the state should assume."""
    p = los_probability(model, distance_2d_m, ut_height_m)
    blockage: np.ndarray | float = 0.0
    if model.startswith("v2v"):
        d_3d = np.hypot(distance_2d_m, np.asarray(bs_height_m) - np.asarray(ut_height_m))
        z = np.zeros(p.shape) if rng is None else rng.standard_normal(p.shape)
        blockage = vehicle_blockage_loss_db(d_3d, bs_height_m, ut_height_m, z)
    args = (model, distance_2d_m, bs_height_m, ut_height_m, carrier_hz)
    if rng is not None:
        los = rng.random(p.shape) < p
        return pathloss_db(*args, los, blockage), los.astype(float)
    gain = p * db_to_linear(-pathloss_db(*args, True)) + (1 - p) * db_to_linear(-pathloss_db(*args, False, blockage))
    return -10.0 * np.log10(gain), p


# ---------------------------------------------------------------------------------------------------- shadowing


@dataclass(frozen=True)
class _StandardParams:
    shadowing_std_db: tuple[float, float]  # (LOS, non-LOS)
    shadowing_decorrelation_m: tuple[float, float]  # (LOS, non-LOS)
    los_decorrelation_m: float  # how far a vehicle moves before its LOS state is drawn afresh


_PARAMS: dict[str, _StandardParams] = {
    # TR 38.901 Table 7.4.1-1 (σ_SF), Table 7.5-6 part 1 (SF correlation distance), Table 7.6.3.1-2 (LOS state)
    "umi": _StandardParams((4.0, 7.82), (10.0, 13.0), 50.0),
    "uma": _StandardParams((4.0, 6.0), (37.0, 50.0), 50.0),
    # TR 37.885 Table 6.2.1-1 (σ_SF 3 dB for LOS and NLOSv), Table 6.2.3-1 (SF correlation 10 m LOS, 13 m NLOSv).
    # The LOS-state correlation distance is our assumption (10 m, the LOS shadowing one): 37.885 gives none.
    "v2v-highway": _StandardParams((3.0, 3.0), (10.0, 13.0), 10.0),
    "v2v-urban": _StandardParams((3.0, 3.0), (10.0, 13.0), 10.0),
}


def _params(model: StandardModel) -> _StandardParams:
    if model not in _PARAMS:
        raise ValueError(f"unknown path-loss model {model!r}; choose from {', '.join(STANDARD_MODELS)}")
    return _PARAMS[model]


def shadowing_std_db(model: StandardModel, los: np.ndarray | bool) -> np.ndarray:
    """Log-normal shadow-fading σ (dB) of the standard for each link's state (V2V non-LOS means NLOSv)."""
    los_std, nlos_std = _params(model).shadowing_std_db
    return np.where(los, los_std, nlos_std)


def shadowing_decorrelation_m(model: StandardModel, los: np.ndarray | bool) -> np.ndarray:
    """Shadowing decorrelation distance (m) of the standard for each link's state."""
    los_m, nlos_m = _params(model).shadowing_decorrelation_m
    return np.where(los, los_m, nlos_m)


class Shadowing:
    """Log-normal shadowing that decorrelates along each vehicle's path (Gudmundson's exponential model).

    Each vehicle–RSU link in coverage carries a shadowing value s; after the vehicle moves Δd metres,
    s ← ρ·s + sqrt(1-ρ²)·σ·n with ρ = exp(-Δd/d_corr), so E[s(d)s(d+Δd)] = σ²·exp(-Δd/d_corr). A link that was not
    there at the last update (its vehicle just entered the RSU's coverage) starts from a fresh draw: the value it
    left with is held nowhere, since a vehicle re-enters a disc after a path far longer than d_corr, so the two are
    practically independent. `std_db` and `decorrelation_m` may be arrays with one entry per field, so one
    instance can carry several independent fields per link (e.g. LOS and NLOS shadowing)."""

    def __init__(self, std_db: float | np.ndarray, decorrelation_m: float | np.ndarray,
                 rng: np.random.Generator) -> None:
        self.std_db = np.asarray(std_db, dtype=float)
        self.decorrelation_m = np.asarray(decorrelation_m, dtype=float)
        self.rng = rng
        self._fields = np.broadcast_shapes(self.std_db.shape, self.decorrelation_m.shape)  # () or (F,)
        self._ids = np.array([], dtype=str)
        self._xy = np.zeros((0, 2))
        self._links = Links.every(np.zeros((0, 0)))
        self._db = np.zeros((0, *self._fields))

    def update(self, ids: np.ndarray, xy_m: np.ndarray, links: Links) -> np.ndarray:
        """Shadowing in dB of each of `links` for vehicles `ids` (sorted) at positions `xy_m`: (L,), or (L, F)
        with F fields."""
        _, prev_xy = realign(self._ids, self._xy, ids)
        known, prev_db = realign_links(self._ids, self._links, self._db, ids, links)
        moved = np.linalg.norm(xy_m - prev_xy, axis=1)[links.row].reshape(-1, *(1 for _ in self._fields))
        rho = np.exp(-moved / self.decorrelation_m)
        rho[~known] = 0.0
        db = self.rng.standard_normal((len(links), *self._fields))
        db *= self.std_db * np.sqrt(1.0 - rho**2)
        db += rho * prev_db
        self._ids, self._xy, self._links, self._db = ids, xy_m, links, db
        return db


@dataclass(frozen=True)
class SimplePathloss:
    """The seeds' power-law model with scenario-given log-normal shadowing (always LOS)."""

    reference_loss_db: float = 38.0
    reference_distance_m: float = 1.0
    exponent: float = 3.0
    shadowing_std_db: float = 4.0
    shadowing_decorrelation_m: float = 10.0


class LargeScaleChannel:
    """Path loss, LOS state and shadowing of the vehicle–RSU links in coverage, consistent along each vehicle's path.

    For a standard model the LOS state is a spatially correlated standard normal z per link (TR 38.901 §7.6.3.3:
    LOS iff Φ(z) < P_LOS(d_2D), correlation distance of Table 7.6.3.1-2), so a vehicle does not flip state at every
    tick; LOS and NLOS shadowing are separate correlated fields with their table σ and decorrelation distance,
    and V2V NLOSv blockage (TR 37.885 §6.2.1) is driven by another correlated normal. Urban V2V links also carry the
    building-blocked NLOS state (v2v_urban_clear_probability; its own correlated normal, 38.901's UMi LOS-state
    correlation distance), with 37.885's NLOS path loss and σ_SF = 4 dB; `blocked` holds the last tick's state."""

    def __init__(self, model: StandardModel | SimplePathloss, carrier_hz: float, rng: np.random.Generator) -> None:
        self.model = model
        self.carrier_hz = carrier_hz
        if isinstance(model, SimplePathloss):
            self._fields = Shadowing(model.shadowing_std_db, model.shadowing_decorrelation_m, rng)
            return
        params = _params(model)
        # fields: LOS shadowing, NLOS shadowing, LOS-state variable, V2V blockage variable; unit σ, scaled later
        decorrelation = [*params.shadowing_decorrelation_m, params.los_decorrelation_m]
        if model.startswith("v2v"):
            decorrelation.append(params.shadowing_decorrelation_m[1])
        if model == "v2v-urban":
            decorrelation.append(_PARAMS["umi"].los_decorrelation_m)
        self.blocked = np.zeros(0, dtype=bool)
        self._fields = Shadowing(1.0, np.array(decorrelation), rng)

    def update(self, ids: np.ndarray, xy_m: np.ndarray, links: Links, rsu_height_m: np.ndarray,
               vehicle_height_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(loss dB = path loss − shadowing gain, LOS bool), each (L,), of `links` for vehicles `ids` (sorted);
        rsu_height_m has one entry per RSU."""
        fields = self._fields.update(ids, xy_m, links)
        model = self.model
        distance_2d_m, height_m = links.distance_2d_m, np.asarray(rsu_height_m, dtype=float)[links.rsu]
        if isinstance(model, SimplePathloss):
            distance = np.hypot(distance_2d_m, height_m - vehicle_height_m)
            loss = simple_pathloss_db(distance, model.reference_loss_db, model.reference_distance_m, model.exponent)
            loss -= fields
            return loss, np.ones(len(links), dtype=bool)
        los = ndtr(fields[:, 2]) < los_probability(model, distance_2d_m, vehicle_height_m)
        blockage = 0.0
        if model.startswith("v2v"):
            d_3d = np.hypot(distance_2d_m, height_m - vehicle_height_m)
            blockage = vehicle_blockage_loss_db(d_3d, height_m, vehicle_height_m, fields[:, 3])
        loss = pathloss_db(model, distance_2d_m, height_m, vehicle_height_m, self.carrier_hz, los, blockage)
        std = shadowing_std_db(model, los)
        if model == "v2v-urban":
            self.blocked = ndtr(fields[:, 4]) >= v2v_urban_clear_probability(distance_2d_m)
            los &= ~self.blocked
            loss = np.where(self.blocked, v2v_urban_nlos_pathloss_db(d_3d, self.carrier_hz), loss)
            std = np.where(self.blocked, V2V_NLOS_SHADOWING_STD_DB, std)
        shadow = np.where(los, fields[:, 0], fields[:, 1]) * std
        return loss - shadow, los


# ---------------------------------------------------------------------------------------------------- fast fading


def rayleigh_power(size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Block-fading power gain |h|² of a unit-power Rayleigh channel: exponential with mean 1."""
    return rng.exponential(1.0, size)


def rician_power(size: int | tuple[int, ...], k_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Block-fading power gain of a unit-power Rician channel: |sqrt(K/(K+1)) + CN(0, 1/(K+1))|²."""
    scatter = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) * math.sqrt(0.5 / (k_factor + 1.0))
    return np.abs(math.sqrt(k_factor / (k_factor + 1.0)) + scatter) ** 2


class CorrelatedFading:
    """Time-correlated Rayleigh/Rician fading per vehicle–RSU link by a sum of sinusoids (Zheng & Xiao 2003).

    h(s) = sqrt(K/(K+1))·e^{j(k s cos α_0 + φ_0)} + Σ_n c_n·e^{j k s cos α_n},  k = 2π f_c / c,
    where s is the distance the vehicle has travelled (its speed integrated over time), so the Doppler phase
    2π f_D t follows speed changes. Angles α_n = (2πn + θ)/N are stratified with a random offset θ per link, so
    each α_n is uniform on its sector and the ensemble autocorrelation is exactly J0(2π f_D τ). The tap gains c_n
    are CN(0, 1/(N(K+1))), which makes every snapshot exactly Rayleigh (Rician) with unit mean power; a
    constant-amplitude sum would only approach it (E|h|⁴ = 2 − 1/N), at the price of one link's time-averaged
    power varying by about 1/√N around 1.

    Only the links asked for are kept and computed (a vehicle's serving and handover-candidate links, not all
    vehicles × RSUs): a link keeps its angles and taps while it is asked for at every update, and a link asked for
    again after a gap is drawn afresh, which is exact in distribution because h depends on the travelled distance
    only. Per-link state follows vehicle ids across updates."""

    def __init__(self, num_rsus: int, carrier_hz: float, rng: np.random.Generator, num_sinusoids: int = 16,
                 k_factor: float = 0.0) -> None:
        self.num_rsus = num_rsus
        self.carrier_hz = carrier_hz
        self.rng = rng
        self.num_sinusoids = num_sinusoids
        self.k_factor = k_factor
        self._wavenumber = 2.0 * math.pi * carrier_hz / SPEED_OF_LIGHT_MPS
        self._ids = np.array([], dtype=str)
        self._time_s = 0.0
        self._travelled_m = np.zeros(0)
        self._speed_mps = np.zeros(0)
        self._rsus = np.zeros((0, 0), dtype=np.int64)  # the RSU of each kept link, -1 for none
        self._slots = np.zeros((0, 0), dtype=np.int64)  # its row in the parameter pool below
        # Link parameters live in a pool that vehicles index, so vehicles coming and going move two small integer
        # columns per tick instead of every link's parameters.
        self._spatial = np.zeros((0, num_sinusoids + 1))  # k·cos α_n, the last column for the LOS ray
        self._taps_re = np.zeros((0, num_sinusoids + 1), dtype=np.float32)
        self._taps_im = np.zeros((0, num_sinusoids + 1), dtype=np.float32)

    def update(self, ids: np.ndarray, speed_mps: np.ndarray, time_s: float,
               rsus: np.ndarray | None = None) -> np.ndarray:
        """Power gain |h|² at `time_s` for vehicles `ids` (sorted) moving at `speed_mps`: (n, m) to every RSU, or
        (n, c) to the RSUs `rsus` (n, c) names per vehicle (-1: no link, gain 0)."""
        envelope = self.envelope(ids, speed_mps, time_s, rsus)
        return envelope.real**2 + envelope.imag**2

    def envelope(self, ids: np.ndarray, speed_mps: np.ndarray, time_s: float,
                 rsus: np.ndarray | None = None) -> np.ndarray:
        """Complex envelope h (shaped like `update`'s result) at `time_s`; advances the state like `update`."""
        speed = np.asarray(speed_mps, dtype=float)
        links = (np.broadcast_to(np.arange(self.num_rsus), (len(ids), self.num_rsus)) if rsus is None
                 else np.asarray(rsus, dtype=np.int64))
        known, travelled = realign(self._ids, self._travelled_m, ids)
        _, prev_speed = realign(self._ids, self._speed_mps, ids)
        travelled += 0.5 * (prev_speed + speed) * (time_s - self._time_s) * known  # trapezoidal ∫ v dt
        if not (len(ids) == len(self._ids) and known.all() and np.array_equal(links, self._rsus)):
            self._keep(ids, known, links)
        self._ids, self._time_s, self._travelled_m, self._speed_mps = ids, time_s, travelled, speed
        slots = self._slots[links >= 0]
        # Phases are reduced to [−π, π] exactly in float64, then the trigonometry runs in float32, whose SIMD
        # kernels are ~10× faster; the envelope's relative error stays below 1e-6.
        phase = self._spatial[slots] * travelled[np.nonzero(links >= 0)[0], None]
        phase -= 2.0 * math.pi * np.rint(phase / (2.0 * math.pi))
        phase32 = phase.astype(np.float32)
        cos, sin = np.cos(phase32), np.sin(phase32)
        taps_re, taps_im = self._taps_re[slots], self._taps_im[slots]
        real = np.einsum("ln,ln->l", cos, taps_re) - np.einsum("ln,ln->l", sin, taps_im)
        imag = np.einsum("ln,ln->l", sin, taps_re) + np.einsum("ln,ln->l", cos, taps_im)
        out = np.zeros(links.shape, dtype=complex)
        out[links >= 0] = real.astype(float) + 1j * imag.astype(float)
        return out

    def _keep(self, ids: np.ndarray, known: np.ndarray, links: np.ndarray) -> None:
        """Hold the parameters of exactly the links asked for: carried over where the vehicle had that link at the
        last update, drawn for the others; the pool rows of links no longer asked for are reused."""
        _, held = realign(self._ids, self._rsus, ids)
        _, held_slots = realign(self._ids, self._slots, ids)
        held[~known] = -1
        slots = np.full(links.shape, -1, dtype=np.int64)
        if held.shape[1]:
            match = (held[:, None, :] == links[:, :, None]) & (links[:, :, None] >= 0)  # (n, wanted, held)
            row, want, have = np.nonzero(match)
            slots[row, want] = held_slots[row, have]
        fresh = (links >= 0) & (slots < 0)
        in_use = np.zeros(len(self._spatial), dtype=bool)
        in_use[slots[slots >= 0]] = True
        free = np.flatnonzero(~in_use)
        count = int(fresh.sum())
        if count > len(free):  # grow the pool geometrically
            size = len(self._spatial)
            grow = max(count - len(free), size)
            self._spatial = np.concatenate([self._spatial, np.zeros((grow, self._spatial.shape[1]))])
            self._taps_re = np.concatenate([self._taps_re, np.zeros((grow, self._taps_re.shape[1]), np.float32)])
            self._taps_im = np.concatenate([self._taps_im, np.zeros((grow, self._taps_im.shape[1]), np.float32)])
            free = np.concatenate([free, size + np.arange(grow)])
        slots[fresh] = free[:count]
        self._draw(slots[fresh])
        self._rsus, self._slots = links.copy(), slots

    def _draw(self, slots: np.ndarray) -> None:
        """Fresh angles and tap gains into pool rows `slots`."""
        n, k = self.num_sinusoids, self.k_factor
        shape = (len(slots),)
        offset = self.rng.uniform(0.0, 2.0 * math.pi, (*shape, 1))
        angles = (2.0 * math.pi * np.arange(n) + offset) / n
        los_angle = self.rng.uniform(0.0, 2.0 * math.pi, (*shape, 1))
        self._spatial[slots] = self._wavenumber * np.cos(np.concatenate([angles, los_angle], axis=-1))
        scatter = (self.rng.standard_normal((*shape, n)) + 1j * self.rng.standard_normal((*shape, n)))
        scatter *= math.sqrt(0.5 / (n * (k + 1.0)))
        los_phase = self.rng.uniform(0.0, 2.0 * math.pi, (*shape, 1))
        taps = np.concatenate([scatter, math.sqrt(k / (k + 1.0)) * np.exp(1j * los_phase)], axis=-1)
        self._taps_re[slots], self._taps_im[slots] = taps.real, taps.imag
