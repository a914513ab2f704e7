"""Scenarios: what happens during a run, in a small TOML file (docs/simulators.md).

    name = "fire"
    [[fire]]
    at = "2m"              # simulated time after the start: 90, "90s", "10m", "2h", "1d"
    building = "B00001"    # optional: chosen from the seed when left out
    duration = "20m"

Tables, each a list so one file can hold several: [[fire]], [[cooking]], [[outage]],
[[hostile]], [[tamper]], [[occlusion]], [[battery]], [[flapping]], [[flood]], [[event]] (one
scripted device event: fault, tamper, self_test, mute, occlusion, video_loss). [devices]
overrides the models' behaviour (simulators.devices.ModelConfig), [uplink] the devices'
buffering and reconnects (simulators.uplink.UplinkConfig), [people] how the simulated
grid workers and duty officers answer their pages (simulators.people.PeopleConfig).

Built-in scenarios live in simulators/scenarios/*.toml and are named by file name; anything
else is a path. Several scenarios combine: their incidents add up, later [devices] and
[uplink] values win. Every field is checked before a run starts; an error names the file and
the field (`fire.toml: fire[0].at: ...`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from simulators.devices import ModelConfig
from simulators.errors import ScenarioError
from simulators.hostile import KINDS as HOSTILE_KINDS
from simulators.hostile import Kind as HostileKind
from simulators.people import PeopleConfig
from simulators.uplink import UplinkConfig

BUILTIN_DIR = Path(__file__).parent / "scenarios"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SPAN_S = 7 * 86400   # must stay well inside ingest's max_age_days (30)


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not found:
            raise ValueError("a duration is a number of seconds or like '90s', '10m', '2h', "
                             f"'1d'; not {value!r}")
        return float(found[1]) * _UNITS[found[2] or "s"]
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=MAX_SPAN_S)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Seconds


class Fire(_Table):
    building: str | None = None
    floor: int | None = Field(None, ge=1)
    device: str | None = Field(None, description="the detector in the room where it starts")
    duration: Seconds = 1800
    camera_smoke_after: Seconds = 150
    camera_fire_after: Seconds = 420


class Cooking(_Table):
    device: str | None = None
    duration: Seconds = 180
    mute_after: Seconds | None = 30


class Outage(_Table):
    duration: Seconds
    devices: list[str] = []
    buildings: list[str] = []
    community: str | None = None
    fraction: float | None = Field(None, gt=0, le=1, description="of all connected devices")

    @model_validator(mode="after")
    def _someone(self) -> Outage:
        if not (self.devices or self.buildings or self.community or self.fraction):
            raise ValueError("say who goes offline: devices, buildings, community or fraction")
        return self


class Hostile(_Table):
    device: str | None = None
    kinds: list[HostileKind] = list(HOSTILE_KINDS)
    every: Seconds = 60
    rounds: int = Field(1, ge=1, le=10_000)


class Tamper(_Table):
    device: str | None = Field(None, description="default: a smoke detector from the seed")
    state: Literal["removed", "opened"] = "removed"
    duration: Seconds | None = Field(1200, description="then `restored`; none: never put back")


class Occlusion(_Table):
    device: str | None = Field(None, description="a camera; default: one from the seed")
    kind: Literal["occlusion", "video_loss"] = "occlusion"
    duration: Seconds | None = Field(600, description="then clear again; none: never")


class Battery(_Table):
    device: str | None = Field(None, description="a smoke detector; default: from the seed")
    level: float = Field(30, gt=0, le=100, description="battery % at `at`")
    empty_after: Seconds = Field(2 * 86400, description="from `level` to 0 %: then it dies")

    @model_validator(mode="after")
    def _drains(self) -> Battery:
        if self.empty_after <= 0:
            raise ValueError("empty_after must be more than 0 s")
        return self


class Flapping(_Table):
    device: str | None = None
    duration: Seconds = 1800
    connection: bool = Field(True, description="the network drops and comes back")
    alarm: bool = Field(False, description="the alarm goes off and clears (a smoke detector)")
    up: Seconds = Field(180, description="mean time between flaps (±50 %)")
    down: Seconds = Field(20, description="mean length of a flap (±50 %)")

    @model_validator(mode="after")
    def _something(self) -> Flapping:
        if not (self.connection or self.alarm):
            raise ValueError("say what flaps: connection = true and/or alarm = true")
        if self.up <= 0 or self.down <= 0:
            raise ValueError("up and down must be more than 0 s")
        return self


class Flood(_Table):
    device: str | None = Field(None, description="with its own connection; default: from the seed")
    duration: Seconds = 120
    rate: float = Field(20, gt=0, le=1000, description="status messages per simulated second")


class Event(_Table):
    device: str
    type: Literal["fault", "tamper", "self_test", "mute", "occlusion", "video_loss"]
    fields: dict[str, Any] = {}


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    duration: Seconds | None = Field(None, description="run length; default: until all settles")
    devices: ModelConfig = ModelConfig()
    uplink: UplinkConfig = UplinkConfig()
    people: PeopleConfig | None = Field(None, description="people who answer the pages")
    fire: list[Fire] = []
    cooking: list[Cooking] = []
    outage: list[Outage] = []
    hostile: list[Hostile] = []
    tamper: list[Tamper] = []
    occlusion: list[Occlusion] = []
    battery: list[Battery] = []
    flapping: list[Flapping] = []
    flood: list[Flood] = []
    event: list[Event] = []

    def span_s(self) -> float:
        """How long a run of this scenario takes: until every incident has played out."""
        if self.duration is not None:
            return self.duration
        ends = [600.0]
        ends += [f.at + f.duration + 900 for f in self.fire]   # smoke decays, alarms clear
        ends += [c.at + c.duration + 300 for c in self.cooking]
        ends += [o.at + o.duration + 600 for o in self.outage]  # reconnect backoff, flush
        ends += [h.at + h.every * (h.rounds - 1) + 60 for h in self.hostile]
        ends += [t.at + (t.duration or 0) + 60 for t in self.tamper]
        ends += [o.at + (o.duration or 0) + 60 for o in self.occlusion]
        # an hour and more of silence after the battery is empty
        ends += [b.at + b.empty_after + 2 * 3600 for b in self.battery]
        ends += [f.at + f.duration + 600 for f in self.flapping]   # the last reconnect
        ends += [f.at + f.duration + 60 for f in self.flood]
        ends += [e.at + 60 for e in self.event]
        return min(max(ends), MAX_SPAN_S)


INCIDENT_TABLES = ("fire", "cooking", "outage", "hostile", "tamper", "occlusion", "battery",
                   "flapping", "flood", "event")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Scenario:
    path = Path(name_or_path)
    if not path.is_file():
        builtin = BUILTIN_DIR / f"{name_or_path}.toml"
        if not builtin.is_file():
            raise ScenarioError(f"no scenario {str(name_or_path)!r}: not a file, and the "
                                f"built-in ones are {', '.join(builtin_names())}")
        path = builtin
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path.name}: {exc}") from exc
    return parse(data, path.name)


def parse(data: dict[str, Any], source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {_where(e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise ScenarioError("\n".join(problems)) from None
    return scenario.model_copy(update={"name": scenario.name or source.removesuffix(".toml")})


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def combine(scenarios: list[Scenario]) -> Scenario:
    """One scenario doing everything the given ones do."""
    if not scenarios:
        return Scenario(name="quiet")
    devices: dict[str, Any] = {}
    uplink: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {k: [] for k in INCIDENT_TABLES}
    durations: list[float] = []
    people = None
    for s in scenarios:
        people = s.people or people
        devices.update(s.devices.model_dump(exclude_unset=True))
        uplink.update(s.uplink.model_dump(exclude_unset=True))
        for k, v in lists.items():
            v.extend(getattr(s, k))
        durations.append(s.span_s())
    return Scenario(name="+".join(s.name for s in scenarios),
                    description="; ".join(s.description for s in scenarios if s.description),
                    duration=max(durations), devices=ModelConfig(**devices),
                    uplink=UplinkConfig(**uplink), people=people, **lists)
