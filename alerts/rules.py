"""The rules: which device messages are fire alerts, what confirms a fire, the ladders.

    Policy          the validated rules file (alerts/default_rules.toml documents it)
    load_policy     read and validate one, raising ConfigError with every problem named
    RuleEngine      decoded messages -> Candidate alerts; pure logic, no I/O

The engine keeps one number per detector (its last temperature, for the rate-of-rise
rule) and nothing else; after a restart that rule needs two reports again.
"""

from __future__ import annotations

import json
import tomllib
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from protocol.decode import Event, Reading
from runtime.errors import ConfigError

LadderRole = Literal["grid_worker", "grid_leader", "community_duty", "street_duty"]
# An incident's severity, which also names the ladder it is on.
Severity = Literal["warning", "confirmed"]
SEVERITIES: tuple[Severity, ...] = ("warning", "confirmed")
# Reports kept per detector for rate-of-rise: bounds memory under a flood of reports.
_RECENT_MAX = 64
RULES = ("smoke_alarm", "camera_smoke", "camera_fire", "high_temperature", "rate_of_rise")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _off(value: object) -> object:
    # TOML has no null: `false` switches a threshold rule off. `true` would pass as 1.0.
    if value is True:
        raise ValueError("give a number, or false to switch the rule off")
    return None if value is False else value


# A threshold that a rules file can switch off with `false` (None: the rule is off).
Threshold = Annotated[float | None, BeforeValidator(_off)]


class DetectorRules(_Strict):
    alarm: bool = True
    high_temperature_c: Threshold = Field(57.0, ge=30, le=200)
    rate_of_rise_c_per_min: Threshold = Field(10.0, gt=0, le=100)
    rate_of_rise_window_s: int = Field(600, ge=10, le=86400)
    # A rise must also be this large: two reports a second apart 0.2 °C apart are sensor
    # noise at 12 °C/min, not a fire.
    rate_of_rise_min_rise_c: float = Field(5.0, gt=0, le=100)


class CameraRules(_Strict):
    smoke_confidence: Threshold = Field(0.8, ge=0, le=1)
    fire_confidence: Threshold = Field(0.7, ge=0, le=1)


class ConfirmRules(_Strict):
    window_s: int = Field(300, ge=1, le=86400)
    detectors: int = Field(2, ge=2, le=100)
    detector_and_camera: bool = True


class FeedbackRules(_Strict):
    false_alarms: int = Field(3, ge=1, le=1000)
    window_days: int = Field(30, ge=1, le=366)


class RepeatRules(_Strict):
    # An incident nobody has acknowledged when its ladder runs out starts the ladder again
    # from its first rung after this long, until somebody acknowledges; `false`: it stays
    # quiet (exhausted), as before issue 16.
    every_s: Annotated[int | None, BeforeValidator(_off)] = Field(600, ge=10, le=86400)


class VoiceRules(_Strict):
    # With voice calls configured (alerts.voice_url), a person paged by a rung is called
    # when the incident is still unacknowledged this long after the page.
    after_s: int = Field(45, ge=0, le=3600)


class Rung(_Strict):
    roles: list[LadderRole] = Field(min_length=1)
    ack_timeout_s: int = Field(ge=1, le=86400)
    fire_service: bool = False


class Policy(_Strict):
    smoke_detector: DetectorRules = DetectorRules()
    camera: CameraRules = CameraRules()
    confirm: ConfirmRules = ConfirmRules()
    feedback: FeedbackRules = FeedbackRules()
    repeat: RepeatRules = RepeatRules()
    voice: VoiceRules = VoiceRules()
    ladder: dict[Severity, list[Rung]]

    @model_validator(mode="after")
    def _both_ladders(self) -> Policy:
        for severity in SEVERITIES:
            if not self.ladder.get(severity):
                raise ValueError(f"ladder.{severity} needs at least one rung")
        return self

    @property
    def ladder_roles(self) -> tuple[str, ...]:
        """Every role any rung pages, for one look-up of who is on duty."""
        return tuple(sorted({r for rungs in self.ladder.values() for rung in rungs
                             for r in rung.roles}))


def load_policy(path: str | Path | None = None) -> Policy:
    """The rules file at `path`, or the built-in default; ConfigError names each problem."""
    return parse_policy(*rules_text(path))


def rules_text(path: str | Path | None = None) -> tuple[str, str]:
    """The text of the rules file at `path`, or of the built-in default, and its name."""
    if path:
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"rules file not found: {source}")
        return source.read_text(encoding="utf-8"), str(source)
    text = resources.files("alerts").joinpath("default_rules.toml").read_text("utf-8")
    return text, "alerts/default_rules.toml"


def parse_policy(text: str, name: str) -> Policy:
    """A rules file's text, validated; ConfigError names each problem and `name`."""
    try:
        return Policy.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules file {name} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        lines = [f"invalid rules file {name}:"]
        for err in exc.errors(include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "(file)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One rule firing on one message: the alert the store records."""
    device_id: str
    ts_ms: int          # device clock of the message
    seq: int
    rule: str
    received_ms: int
    detail: dict[str, Any] = field(default_factory=dict)
    gateway_id: str | None = None   # set when a gateway relayed it


@dataclass
class RuleEngine:
    policy: Policy
    # Per detector, its recent (ts_ms, temperature_c) reports within the rate-of-rise
    # window, oldest first; detectors report hourly, so usually one.
    _temps: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)

    def events(self, rows: list[Event]) -> list[Candidate]:
        """Events as protocol.decode yields them."""
        out: list[Candidate] = []
        det, cam = self.policy.smoke_detector, self.policy.camera
        for ev in rows:
            if ev.type == "alarm":
                attrs = _clean(json.loads(ev.attrs))
                if det.alarm:
                    out.append(Candidate(ev.device_id, ev.ts_ms, ev.seq, "smoke_alarm",
                                         ev.received_ms, attrs, ev.gateway_id))
                temp = attrs.get("temperature_c")
                if temp is not None:
                    self._temperature(out, ev.device_id, ev.ts_ms, ev.seq, ev.received_ms,
                                      temp, ev.gateway_id)
            elif ev.type in ("smoke_detected", "fire_detected"):
                attrs = _clean(json.loads(ev.attrs))
                smoke = ev.type == "smoke_detected"
                floor = cam.smoke_confidence if smoke else cam.fire_confidence
                if floor is not None and attrs["confidence"] >= floor:
                    rule = "camera_smoke" if smoke else "camera_fire"
                    out.append(Candidate(ev.device_id, ev.ts_ms, ev.seq, rule, ev.received_ms,
                                         attrs, ev.gateway_id))
        return out

    def readings(self, rows: list[Reading]) -> list[Candidate]:
        """Status reports as protocol.decode yields them; only detectors' temperatures count
        (a camera's temperature is its own housing's)."""
        out: list[Candidate] = []
        for r in rows:
            if r.kind == "smoke" and r.temperature_c is not None:
                self._temperature(out, r.device_id, r.ts_ms, r.seq, r.received_ms,
                                  r.temperature_c, r.gateway_id)
        return out

    def _temperature(self, out: list[Candidate], device_id: str, ts: int, seq: int,
                     received: int, temp: float, gw: str | None) -> None:
        det = self.policy.smoke_detector
        if det.high_temperature_c is not None and temp >= det.high_temperature_c:
            out.append(Candidate(device_id, ts, seq, "high_temperature", received,
                                 {"temperature_c": temp, "threshold_c": det.high_temperature_c},
                                 gw))
        recent = self._temps.setdefault(device_id, deque(maxlen=_RECENT_MAX))
        if recent and ts <= recent[-1][0]:
            return      # a redelivery or an older report: the rise was judged with it
        while recent and ts - recent[0][0] > det.rate_of_rise_window_s * 1000:
            recent.popleft()
        if det.rate_of_rise_c_per_min is not None and recent:
            # From the coolest report in the window: a rise reported in many small steps
            # counts as a whole, and one noisy pair of reports does not.
            then, before = min(recent, key=lambda r: r[1])
            gap_s = (ts - then) / 1000
            rise = temp - before
            rate = rise / gap_s * 60
            if rise >= det.rate_of_rise_min_rise_c and rate >= det.rate_of_rise_c_per_min:
                out.append(Candidate(device_id, ts, seq, "rate_of_rise", received,
                                     {"c_per_min": round(rate, 2), "from_c": before,
                                      "to_c": temp, "over_s": gap_s}, gw))
        recent.append((ts, temp))


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's jsonb refuses NUL characters, which valid JSON text may carry (a
    camera's snapshot_url, say); ingest keeps the raw event, the alert keeps the rest."""
    return {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in attrs.items()}
