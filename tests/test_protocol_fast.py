"""The msgspec fast path for telemetry (protocol/fast.py) against the pydantic models, the
law: whatever a message is, the decoder must give the same rows and the same dead letters
with the fast path as without it. Hand-made messages for the known differences between the
two parsers and every bound, then drawn ones."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import fast
from protocol.decode import Decoder

NOW = int(time.time() * 1000)
TOPIC = "fg/v1/SD-0001/telemetry"
SMOKE = {"v": 1, "ts": NOW, "seq": 7, "type": "smoke_status", "obscuration_db_m": 0.02,
         "temperature_c": 24.5, "battery_pct": 88, "battery_v": 3.6, "rsrp_dbm": -95,
         "sinr_db": 7.5, "heartbeat_s": 3600}
CAMERA = {"ts": NOW, "seq": 8, "type": "camera_status", "stream_online": True,
          "recording": False, "storage_free_mb": 51200}
BOUNDS = {"ts": (946684800000, 32503680000000), "seq": (0, 2**32 - 1),
          "obscuration_db_m": (0, 100), "temperature_c": (-50, 200), "battery_pct": (0, 100),
          "battery_v": (0, 20), "rsrp_dbm": (-160, 0), "sinr_db": (-30, 60),
          "heartbeat_s": (10, 604800), "storage_free_mb": (0, 2**63 - 1)}


def _decoder() -> Decoder:
    return Decoder(prefix="fg/v1", max_payload_bytes=65536, max_future_skew_s=10**9,
                   max_age_days=10**5)


def _both(raw: bytes) -> tuple[object, object, bool]:
    """The decoder's answer with the fast path and without it; and whether it was taken."""
    taken = fast.telemetry(raw) is not None
    with_fast = _decoder().decode(TOPIC, raw, NOW)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fast, "telemetry", lambda payload: None)
        models_only = _decoder().decode(TOPIC, raw, NOW)
    return with_fast, models_only, taken


def _edit(base: dict, **changes: object) -> bytes:
    return json.dumps({**base, **changes}).encode()


def _cases() -> list[bytes]:
    smoke = json.dumps(SMOKE).encode()
    cases = [smoke, json.dumps(CAMERA).encode(), _edit(CAMERA, temperature_c=None),
             _edit(CAMERA, temperature_c=30)]
    for name, (low, high) in BOUNDS.items():
        base = CAMERA if name == "storage_free_mb" else SMOKE
        for value in (low, high, low - 1, high + 1, low - 0.5, high + 0.5, float(low)):
            cases.append(_edit(base, **{name: value}))
    for name in ("battery_pct", "heartbeat_s", "seq"):            # ints given otherwise
        cases += [_edit(SMOKE, **{name: v}) for v in (50.0, True, "50", None, [50], 1e2)]
    for name in ("temperature_c", "battery_v"):                   # floats given otherwise
        cases += [_edit(SMOKE, **{name: v}) for v in (24, False, "24.5", None, {"c": 1})]
    cases += [_edit(CAMERA, stream_online=v) for v in (1, 0, "true", None)]
    cases += [_edit(SMOKE, v=v) for v in (2, 1.0, True, "1", None)]
    cases += [_edit(SMOKE, type=t) for t in ("alarm", "Smoke_status", "", None, 1)]
    missing = dict(SMOKE)
    del missing["battery_v"]
    cases += [json.dumps(missing).encode(), b"{}", b"[]", b"null", b"", b"not json",
              smoke + b" x", b"\xef\xbb\xbf" + smoke, smoke[:-1] + b',}',
              smoke.replace(b'"seq": 7', b'"seq": 7, "seq": 9'),             # duplicate key
              smoke.replace(b'"seq": 7', b'"seq": 07'),
              smoke.replace(b"24.5", b"NaN"), smoke.replace(b"24.5", b"Infinity"),
              smoke.replace(b"24.5", b"1e999"), smoke.replace(b"24.5", b"-0.0"),
              smoke.replace(b"3600", b"36" + b"0" * 30),
              smoke.replace(b'"smoke_status"', b'"smoke\\u005fstatus"')]
    # Unknown fields: ignored by both, unless their JSON is broken in a way one parser sees.
    for extra in (b'"x": 1', b'"x": "caf\xc3\xa9"', b'"x": "\xff\xfe"', b'"x": "\\ud800"',
                  b'"x": "a\x01b"', b'"x": {"y": [1, 2, {"z": null}]}', b'"x": [' * 3,
                  b'"x": ' + b"[" * 150 + b"]" * 150, b'"x": ' + b"[" * 201 + b"]" * 201,
                  b'"": 0', b'"x": 1e400', b'"x": tru'):
        cases.append(smoke[:-1] + b", " + extra + b"}")
    return cases


def test_fast_path_gives_the_models_answer_on_every_hand_made_message():
    taken = 0
    for raw in _cases():
        with_fast, models_only, was_taken = _both(raw)
        assert with_fast == models_only, raw
        taken += was_taken
    assert taken >= 20, "the fast path took almost nothing: it is not being tested"
    assert fast.telemetry(json.dumps(SMOKE).encode()) is not None


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    base = dict(draw(st.sampled_from([SMOKE, CAMERA])))
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del base[name]
        elif name in BOUNDS and draw(st.booleans()):
            low, high = BOUNDS[name]
            base[name] = draw(st.sampled_from([low, high, low - 1, high + 1]) | _SCALARS)
        else:
            base[name] = draw(_SCALARS)
    base.update(draw(st.dictionaries(st.text(max_size=6), _SCALARS, max_size=3)))
    raw = json.dumps(base, ensure_ascii=draw(st.booleans())).encode()
    if draw(st.booleans()):         # and a byte changed, anywhere
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


@settings(max_examples=3000, deadline=None)
@given(raw=_messages())
def test_fast_path_gives_the_models_answer_on_drawn_messages(raw):
    with_fast, models_only, _ = _both(raw)
    assert with_fast == models_only
