"""WGS-84 <-> GCJ-02, for maps of Chinese map services.

The registry keeps buildings in WGS-84 (what GPS and surveyors give). Map tiles from
Chinese services (Amap/高德, Tencent) are drawn in GCJ-02, the state-mandated offset datum
(up to some hundreds of metres from WGS-84 in the city): a WGS-84 point drawn on them lands
in the wrong lane, or the wrong building in an urban village. The console's map converts
the building's position to the datum of its tile source (api.map_datum).

The forward transform is the published GCJ-02 algorithm (Krasovsky ellipsoid constants), as
in wandergis/coordtransform and googollee/eviltransform; there is no closed-form inverse, so
gcj02_to_wgs84 iterates the forward one (converges to under a millimetre in a few steps).
Outside China GCJ-02 is WGS-84. Pure functions, no I/O.
"""

from __future__ import annotations

import math

_A = 6378245.0                       # Krasovsky 1940 semi-major axis, m
_EE = 0.00669342162296594323         # its first eccentricity squared


def out_of_china(lat: float, lon: float) -> bool:
    """The rough box GCJ-02 applies in (as every published implementation draws it)."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _offset(lat: float, lon: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    common = (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
            + 0.2 * math.sqrt(abs(x)) + common
            + (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2 / 3
            + (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2 / 3)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x)) + common
            + (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2 / 3
            + (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi))
            * 2 / 3)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = dlat * 180.0 / (_A * (1 - _EE) / (magic * sqrt_magic) * math.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """(lat, lon) in WGS-84 -> (lat, lon) in GCJ-02."""
    if out_of_china(lat, lon):
        return lat, lon
    dlat, dlon = _offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float, *, tolerance: float = 1e-9) -> tuple[float, float]:
    """(lat, lon) in GCJ-02 -> (lat, lon) in WGS-84: the point whose forward transform is
    the given one, found by fixed-point iteration (the offset varies slowly)."""
    if out_of_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(30):
        glat, glon = wgs84_to_gcj02(wlat, wlon)
        dlat, dlon = glat - lat, glon - lon
        wlat, wlon = wlat - dlat, wlon - dlon
        if max(abs(dlat), abs(dlon)) < tolerance:
            break
    return wlat, wlon


def to_datum(lat: float, lon: float, datum: str) -> tuple[float, float]:
    """A WGS-84 position in the given datum ("wgs84" or "gcj02")."""
    return wgs84_to_gcj02(lat, lon) if datum == "gcj02" else (lat, lon)
