"""devices/geo.py against points published with other implementations of GCJ-02. Pure."""

from __future__ import annotations

import pytest

from devices.geo import gcj02_to_wgs84, out_of_china, to_datum, wgs84_to_gcj02

# wandergis/coordtransform (Krasovsky constants, as here), also in coordtransform-rs's
# tests: Tiananmen, given as (lon, lat) there.
WGS_TIANANMEN, GCJ_TIANANMEN = (39.915, 116.404), (39.91640428150164, 116.41024449916938)
# googollee/eviltransform's tests (wgsLat, wgsLng, gcjLat, gcjLng). It uses WGS-84's
# semi-major axis instead of Krasovsky's, which moves the offset by well under a metre.
EVILTRANSFORM = [
    ((31.1774276, 121.5272106), (31.17530398364597, 121.531541859215)),    # Shanghai
    ((22.543847, 113.912316), (22.540796131694766, 113.9171764808363)),    # Shenzhen
    ((39.911954, 116.377817), (39.91334545536069, 116.38404722455657)),    # Beijing
]
METRE = 1e-5     # about a metre, in degrees, at these latitudes


def test_the_published_tiananmen_point():
    assert wgs84_to_gcj02(*WGS_TIANANMEN) == pytest.approx(GCJ_TIANANMEN, abs=1e-12)


@pytest.mark.parametrize(("wgs", "gcj"), EVILTRANSFORM)
def test_eviltransforms_points_within_a_metre(wgs, gcj):
    assert wgs84_to_gcj02(*wgs) == pytest.approx(gcj, abs=METRE)
    assert gcj02_to_wgs84(*gcj) == pytest.approx(wgs, abs=METRE)


@pytest.mark.parametrize("wgs", [WGS_TIANANMEN, (22.52, 114.05), (45.75, 126.63),
                                 (18.25, 109.5)])
def test_the_inverse_undoes_the_forward_to_a_millimetre(wgs):
    assert gcj02_to_wgs84(*wgs84_to_gcj02(*wgs)) == pytest.approx(wgs, abs=1e-8)


def test_the_offset_in_shenzhen_is_hundreds_of_metres():
    # Why the console converts at all: the demo street's buildings, drawn without it on
    # Amap's tiles, would sit ~500 m off.
    lat, lon = wgs84_to_gcj02(22.52, 114.05)
    assert 0.002 < abs(lat - 22.52) + abs(lon - 114.05) < 0.01


def test_outside_china_nothing_moves():
    assert out_of_china(48.85, 2.35) and not out_of_china(22.52, 114.05)
    assert wgs84_to_gcj02(48.85, 2.35) == (48.85, 2.35)
    assert gcj02_to_wgs84(48.85, 2.35) == (48.85, 2.35)
    assert to_datum(22.52, 114.05, "wgs84") == (22.52, 114.05)
    assert to_datum(22.52, 114.05, "gcj02") == wgs84_to_gcj02(22.52, 114.05)
