"""The SensorThings API 1.1 walked through the conformance classes of OGC 18-088 that CitySense
implements: sensing core (every entity set, navigation, $ref), the filtering extension (each query
option), the data-array extension — against real InfluxDB and Mosquitto, over one seeded city
shared by the module (tests/support/sta.py). Expected answers are computed here from the registry
and the seeded points, never copied from an answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from citysense.servers import LocalServers
from device_profiles import DEFAULT_PROFILES, load_profiles
from tests.support.api import TOKENS
from tests.support.sta import DEVICES, STEP, STEPS, StaCity, day_start, sta_city
from tests.support.times import rfc3339

pytestmark = pytest.mark.integration

PROFILES = load_profiles(DEFAULT_PROFILES)
SETS = {
    "Things",
    "Locations",
    "HistoricalLocations",
    "Datastreams",
    "Sensors",
    "ObservedProperties",
    "Observations",
    "FeaturesOfInterest",
}
NAVIGATION = {
    "Things": {"Locations", "HistoricalLocations", "Datastreams"},
    "Locations": {"Things", "HistoricalLocations"},
    "Datastreams": {"Thing", "Sensor", "ObservedProperty", "Observations"},
    "Sensors": {"Datastreams"},
    "ObservedProperties": {"Datastreams"},
    "Observations": {"Datastream", "FeatureOfInterest"},
    "FeaturesOfInterest": {"Observations"},
}


@pytest.fixture(scope="module")
def city(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaCity]:
    with sta_city(servers, tmp_path_factory.mktemp("sta"), day_start(time.time_ns())) as c:
        yield c


@pytest.fixture(scope="module")
def client(city: StaCity) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKENS['city']}"}
    with httpx.Client(base_url=city.root, headers=headers, timeout=30) as c:
        yield c


def get(client: httpx.Client, path: str, **params: str) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def refused(client: httpx.Client, path: str, **params: str) -> str:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400 and body["type"] == "error"
    return str(body["message"])


def ids(body: dict[str, Any]) -> list[str]:
    return [item["@iot.id"] for item in body["value"]]


def fields(profile: str) -> list[str]:
    return list(PROFILES[profile].fields)


# --- sensing core -------------------------------------------------------------------------------


def test_service_root_lists_every_entity_set(client: httpx.Client, city: StaCity) -> None:
    body = get(client, "")
    assert {item["name"] for item in body["value"]} == SETS
    for item in body["value"]:
        assert item["url"] == f"{city.root}/{item['name']}"
    conformance = body["serverSettings"]["conformance"]
    assert any(c.endswith("/req/request-data") for c in conformance)


def test_things_are_the_registry(client: httpx.Client, city: StaCity) -> None:
    body = get(client, "Things")
    assert ids(body) == sorted(d[0] for d in DEVICES)
    sl2 = next(t for t in body["value"] if t["@iot.id"] == "SL-2")
    assert sl2["properties"] == {
        "profile": "streetlight",
        "district": "North",
        "address": "2 Sensor St",
        "variant": "lumio",
    }
    assert sl2["@iot.selfLink"] == f"{city.root}/Things('SL-2')"
    for nav in NAVIGATION["Things"]:
        assert sl2[f"{nav}@iot.navigationLink"] == f"{city.root}/Things('SL-2')/{nav}"


@pytest.mark.parametrize("entity_set", sorted(SETS - {"Observations"}))
def test_every_entity_set_answers_and_each_self_link_leads_back(
    client: httpx.Client, entity_set: str
) -> None:
    body = get(client, entity_set)
    if entity_set == "HistoricalLocations":
        assert body["value"] == []  # the registry keeps no history of where devices stood
        return
    assert body["value"]
    for entity in body["value"][:3]:
        again = httpx.get(entity["@iot.selfLink"], headers=client.headers).json()
        assert again == entity
        assert {k.split("@")[0] for k in entity if k.endswith("@iot.navigationLink")} == (
            NAVIGATION[entity_set]
        )


def test_sensors_and_observed_properties_come_from_the_profiles(client: httpx.Client) -> None:
    sensors = ids(get(client, "Sensors"))
    assert sensors == sorted([*PROFILES, "streetlight:lumio"])
    observed = get(client, "ObservedProperties")
    expected = sorted(f"{p}:{f}" for p in PROFILES for f in fields(p))
    assert sorted(ids(observed)) == expected
    pressure = next(o for o in observed["value"] if o["@iot.id"] == "water_pipe:pressure")
    assert pressure["name"] == "pressure"
    assert pressure["definition"].startswith("https://smartdatamodels.org/")
    assert pressure["definition"].endswith("/pressure")


def test_navigation_from_a_thing_to_its_datastreams_and_back(client: httpx.Client) -> None:
    streams = get(client, "Things('WP-1')/Datastreams")
    assert ids(streams) == [f"WP-1:{f}" for f in fields("water_pipe")]
    pressure = get(client, "Datastreams('WP-1:pressure')")
    assert pressure["unitOfMeasurement"]["symbol"] == "kPa"
    assert pressure["observationType"].endswith("OM_Measurement")
    leak = get(client, "Datastreams('WP-1:leakDetected')")
    assert leak["observationType"].endswith("OM_TruthObservation")
    assert leak["unitOfMeasurement"]["symbol"] is None
    assert get(client, "Datastreams('WP-1:pressure')/Thing")["@iot.id"] == "WP-1"
    assert get(client, "Datastreams('SL-2:voltage')/Sensor")["@iot.id"] == "streetlight:lumio"
    assert get(client, "Datastreams('SL-1:voltage')/Sensor")["@iot.id"] == "streetlight"
    observed = get(client, "Datastreams('WP-1:pressure')/ObservedProperty")
    assert observed["@iot.id"] == "water_pipe:pressure"
    on_lumio = ids(get(client, "Sensors('streetlight:lumio')/Datastreams"))
    assert on_lumio == [f"SL-2:{f}" for f in fields("streetlight")]


def test_locations_and_features_of_interest_are_the_registry_coordinates(
    client: httpx.Client,
) -> None:
    for device_id, _, _, lat, lon, _ in DEVICES:
        (location,) = get(client, f"Things('{device_id}')/Locations")["value"]
        assert location["encodingType"] == "application/geo+json"
        assert location["location"] == {"type": "Point", "coordinates": [lon, lat]}
        feature = get(client, f"FeaturesOfInterest('{device_id}')")
        assert feature["feature"] == location["location"]
        assert ids(get(client, f"Locations('{device_id}')/Things")) == [device_id]


def test_datastream_phenomenon_time_spans_its_data(client: httpx.Client, city: StaCity) -> None:
    series = city.series("SL-1", "powerConsumption")
    span = get(client, "Datastreams('SL-1:powerConsumption')")["phenomenonTime"]
    assert span == f"{rfc3339(series[0][0])}/{rfc3339(series[-1][0])}"
    assert get(client, "Datastreams('WP-2:pressure')")["phenomenonTime"] is None  # no data


def test_observations_are_the_stored_readings(client: httpx.Client, city: StaCity) -> None:
    series = city.series("WP-1", "pressure")
    body = get(client, "Datastreams('WP-1:pressure')/Observations", **{"$top": "1000"})
    assert [(o["phenomenonTime"], o["result"]) for o in body["value"]] == [
        (rfc3339(t), v) for t, v in series
    ]
    first = body["value"][0]
    assert first["@iot.id"] == f"WP-1:pressure:{series[0][0]}"
    assert get(client, f"Observations('{first['@iot.id']}')") == first
    assert get(client, f"Observations('{first['@iot.id']}')/Datastream")["@iot.id"] == (
        "WP-1:pressure"
    )
    assert get(client, f"Observations('{first['@iot.id']}')/FeatureOfInterest")["@iot.id"] == (
        "WP-1"
    )


def test_ref_and_value(client: httpx.Client, city: StaCity) -> None:
    refs = get(client, "Things('SL-1')/Datastreams/$ref")
    assert refs["value"] == [
        {"@iot.selfLink": f"{city.root}/Datastreams('SL-1:{f}')"} for f in fields("streetlight")
    ]
    assert get(client, "Things('SL-1')/$ref") == {"@iot.selfLink": f"{city.root}/Things('SL-1')"}
    assert get(client, "Things('SL-1')/name") == {"name": "SL-1"}
    response = client.get("Things('SL-1')/name/$value")
    assert response.status_code == 200 and response.text == "SL-1"


def test_next_links_walk_the_whole_collection_once(client: httpx.Client, city: StaCity) -> None:
    seen, url = [], "Things?$top=4"
    pages = 0
    while url:
        body = client.get(url).json()
        seen += ids(body)
        url = body.get("@iot.nextLink", "")
        pages += 1
    assert seen == sorted(d[0] for d in DEVICES) and pages == 2
    seen_obs, obs_url = [], "Datastreams('SL-1:powerState')/Observations?$top=100"
    while obs_url:
        body = client.get(obs_url).json()
        seen_obs += [o["result"] for o in body["value"]]
        obs_url = body.get("@iot.nextLink", "")
    assert seen_obs == [v for _, v in city.series("SL-1", "powerState")]


def test_unknown_entities_are_404(client: httpx.Client) -> None:
    for path in ("Things('nope')", "Datastreams('SL-1:nofield')", "Sensors('x')"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["type"] == "error"
    assert client.get(f"Observations('SL-1:powerConsumption:{12345}')").status_code == 404


# --- scopes -------------------------------------------------------------------------------------


def test_a_department_sees_only_its_things(city: StaCity) -> None:
    water = {"Authorization": f"Bearer {TOKENS['water-north']}"}
    body = httpx.get(f"{city.root}/Things", headers=water).json()
    assert ids(body) == ["WP-1"]  # water_pipe in North
    assert httpx.get(f"{city.root}/Things('SL-1')", headers=water).status_code == 404
    assert httpx.get(f"{city.root}/Datastreams('WP-2:pressure')", headers=water).status_code == (
        404
    )
    sensors = httpx.get(f"{city.root}/Sensors", headers=water).json()
    assert ids(sensors) == ["water_pipe"]


def test_open_data_and_strangers_see_nothing(city: StaCity) -> None:
    portal = {"Authorization": f"Bearer {TOKENS['portal']}"}
    for path in ("", "/Things", "/Datastreams('WP-1:pressure')/Observations"):
        assert httpx.get(f"{city.root}{path}", headers=portal).status_code == 403
        assert httpx.get(f"{city.root}{path}").status_code == 401


# --- filtering extension ------------------------------------------------------------------------


def test_top_skip_count(client: httpx.Client) -> None:
    everything = sorted(d[0] for d in DEVICES)
    body = get(client, "Things", **{"$top": "2", "$skip": "1", "$count": "true"})
    assert ids(body) == everything[1:3]
    assert body["@iot.count"] == len(everything)
    obs = get(
        client,
        "Datastreams('SL-2:powerConsumption')/Observations",
        **{"$top": "0", "$count": "true"},
    )
    assert obs["value"] == [] and obs["@iot.count"] == STEPS


def test_orderby_and_select(client: httpx.Client) -> None:
    body = get(client, "Things", **{"$orderby": "properties/district desc,name asc"})
    expected = sorted(DEVICES, key=lambda d: d[0])
    expected.sort(key=lambda d: d[2], reverse=True)
    assert ids(body) == [d[0] for d in expected]
    body = get(client, "Things", **{"$select": "id,name"})
    assert all(set(t) == {"@iot.id", "@iot.selfLink", "name"} for t in body["value"])
    newest = get(
        client,
        "Datastreams('SL-2:powerConsumption')/Observations",
        **{"$orderby": "phenomenonTime desc", "$top": "1", "$select": "result"},
    )
    assert newest["value"] == [{"result": 50.0 + STEPS - 1}]


def test_expand_nested_with_its_own_options(client: httpx.Client, city: StaCity) -> None:
    body = get(
        client,
        "Things('SL-1')",
        **{
            "$expand": "Locations,Datastreams($filter=name eq 'powerState of SL-1';"
            "$expand=Observations($top=2;$orderby=phenomenonTime desc))"
        },
    )
    assert body["Locations"][0]["location"]["coordinates"] == [120.10, 30.10]
    (stream,) = body["Datastreams"]
    assert stream["@iot.id"] == "SL-1:powerState"
    newest = city.series("SL-1", "powerState")[-2:][::-1]
    assert [(o["phenomenonTime"], o["result"]) for o in stream["Observations"]] == [
        (rfc3339(t), v) for t, v in newest
    ]
    assert "Observations@iot.nextLink" in stream
    path_form = get(client, "Datastreams('WP-1:pressure')", **{"$expand": "Thing/Locations"})
    assert path_form["Thing"]["Locations"][0]["@iot.id"] == "WP-1"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("properties/district eq 'South'", {"SL-3", "WP-2"}),
        ("properties/profile eq 'streetlight' and not (properties/district eq 'North')", {"SL-3"}),
        ("startswith(name, 'WP') or endswith(name, '-1')", {"WP-1", "WP-2", "SL-1", "PM-1"}),
        ("substringof('M-', name)", {"PM-1"}),
        ("length(name) add 1 eq 5 and tolower(name) eq 'sl-2'", {"SL-2"}),
        ("indexof(name, '-') mul 2 eq 4 and substring(name, 3) eq '3'", {"SL-3"}),
        ("properties/variant ne null", {"SL-2"}),
        ("year(now()) ge 2024 and name in ('SL-1', 'PM-1')", {"SL-1", "PM-1"}),
        (
            "st_within(Locations/location, geography'POLYGON((120.15 30.15, 120.45 30.15, "
            "120.45 30.45, 120.15 30.45, 120.15 30.15))')",
            {"SL-2", "SL-3", "WP-1"},
        ),
        ("geo.intersects(Locations/location, geography'POINT(120.6 30.6)')", {"PM-1"}),
    ],
)
def test_filter_on_things(client: httpx.Client, query: str, expected: set[str]) -> None:
    assert set(ids(get(client, "Things", **{"$filter": query}))) == expected


def test_filter_on_datastreams_follows_navigation(client: httpx.Client) -> None:
    body = get(
        client,
        "Datastreams",
        **{
            "$filter": "Thing/properties/district eq 'South' "
            "and ObservedProperty/name eq 'pressure'"
        },
    )
    assert ids(body) == ["WP-2:pressure"]
    units = get(client, "Datastreams", **{"$filter": "unitOfMeasurement/symbol eq 'kPa'"})
    assert ids(units) == ["WP-1:pressure", "WP-2:pressure"]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("result gt 240", lambda t, v, s: v > 240),
        ("result sub 200 le 3 or result ge 248", lambda t, v, s: v - 200 <= 3 or v >= 248),
        ("not (result lt 210) and result mul 2 lt 440", lambda t, v, s: 210 <= v < 220),
        ("result in (200, 249)", lambda t, v, s: v in (200, 249)),
        ("phenomenonTime ge {mid} and result ne 201", lambda t, v, s: t >= s and v != 201),
        ("phenomenonTime lt {mid}", lambda t, v, s: t < s),
    ],
)
def test_filter_on_observations_is_pushed_to_influxdb(
    client: httpx.Client, city: StaCity, query: str, keep: Any
) -> None:
    mid = city.start + STEPS // 2 * STEP
    series = city.series("WP-1", "pressure")
    body = get(
        client,
        "Datastreams('WP-1:pressure')/Observations",
        **{"$filter": query.format(mid=rfc3339(mid)), "$top": "1000", "$count": "true"},
    )
    expected = [(rfc3339(t), v) for t, v in series if keep(t, v, mid)]
    assert [(o["phenomenonTime"], o["result"]) for o in body["value"]] == expected
    assert body["@iot.count"] == len(expected) and expected


def test_filter_on_state_and_flag_results(client: httpx.Client, city: StaCity) -> None:
    on = get(
        client,
        "Datastreams('SL-1:powerState')/Observations",
        **{"$filter": "result eq 'on'", "$top": "1000"},
    )
    assert len(on["value"]) == sum(v == "on" for _, v in city.series("SL-1", "powerState"))
    leaks = get(
        client,
        "Observations",
        **{"$filter": "Datastream/id eq 'WP-1:leakDetected' and result eq true"},
    )
    assert len(leaks["value"]) == sum(v is True for _, v in city.series("WP-1", "leakDetected"))


# --- data array extension -----------------------------------------------------------------------


def test_data_array(client: httpx.Client, city: StaCity) -> None:
    series = city.series("SL-2", "powerConsumption")[:5]
    body = get(
        client,
        "Datastreams('SL-2:powerConsumption')/Observations",
        **{"$resultFormat": "dataArray", "$top": "5", "$select": "phenomenonTime,result"},
    )
    (item,) = body["value"]
    assert item["components"] == ["phenomenonTime", "result"]
    assert item["dataArray@iot.count"] == 5
    assert item["dataArray"] == [[rfc3339(t), v] for t, v in series]
    assert item["Datastream@iot.navigationLink"].endswith("Datastreams('SL-2:powerConsumption')")


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("Things", {"$filter": "(" * 40 + "name eq 'a'" + ")" * 40}, "nests deeper"),
        ("Things", {"$filter": " and ".join(["name eq 'a'"] * 200)}, "longer than"),
        ("Things", {"$filter": "name eq 1" + "0" * 60}, "out of range"),
        ("Things", {"$filter": "name eq 'a'; DROP DATABASE x"}, "$filter"),
        (
            "Datastreams('WP-1:pressure')/Observations",
            {"$filter": 'result eq 1" OR 1=1'},
            "$filter",
        ),
        ("Things", {"$filter": "nosuch eq 1"}, "no property 'nosuch'"),
        ("Things", {"$filter": "name eq"}, "$filter"),
        (
            "Things",
            {"$expand": "Datastreams($expand=Thing($expand=Datastreams($expand=Thing)))"},
            "deeper",
        ),
        ("Things", {"$expand": "Nowhere"}, "no navigation property"),
        ("Things", {"$top": "99999999999999999999"}, "$top"),
        ("Things", {"$select": "name,secret"}, "no property 'secret'"),
        ("Things", {"$orderby": "name sideways"}, "$orderby"),
        ("Things", {"$format": "xml"}, "unknown query option"),
        (
            "Datastreams('WP-1:pressure')/Observations",
            {"$filter": "result eq '1 OR 1=1' or device_id ne ''"},
            "cannot be compared",
        ),
        (
            "Datastreams('WP-1:pressure')/Observations",
            {"$filter": "year(phenomenonTime) eq 2024"},
            "database",
        ),
        (
            "Datastreams('WP-1:pressure')/Observations",
            {"$filter": "phenomenonTime gt 2024-01-01T00:00:00Z or result gt 1"},
            "and",
        ),
        ("Datastreams('WP-1:pressure')/Observations", {"$orderby": "result"}, "phenomenonTime"),
        ("Observations", {}, "one Datastream at a time"),
        ("Things('SL-1')/Nowhere", {}, "no navigation property"),
    ],
)
def test_hostile_or_unsupported_requests_are_400_with_a_message(
    client: httpx.Client, path: str, params: dict[str, str], says: str
) -> None:
    assert says in refused(client, path, **params)


def test_injection_through_an_id_finds_nothing(client: httpx.Client) -> None:
    hostile = quote("SL-1'') OR (''1''=''1")
    assert client.get(f"Things('{hostile}')").status_code in (400, 404)
    assert client.get("Datastreams('SL-1:powerState\" OR 1=1')/Observations").status_code in (
        400,
        404,
    )


def test_the_native_api_answers_beside_it(city: StaCity) -> None:
    # The native API still answers beside /sta (same token).
    headers = {"Authorization": f"Bearer {TOKENS['city']}"}
    assert httpx.get(f"{city.url}/devices/SL-1", headers=headers).status_code == 200
