"""Scenarios: what happens during a run, in a small TOML file (docs/simulators.md).

    name = "fire"
    [[fire]]
    at = "2m"              # simulated time after the start: 90, "90s", "10m", "2h", "1d"
    building = "B00001"    # optional: chosen from the seed when left out
    duration = "20m"

Tables, each a list so one file can hold several: [[fire]], [[cooking]], [[outage]],
[[hostile]], [[event]] (one scripted device event: fault, tamper, self_test, mute, occlusion,
video_loss). [devices] overrides the models' behaviour (simulators.devices.ModelConfig),
[uplink] the devices' buffering and reconnects (simulators.uplink.UplinkConfig).

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

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from simulators.devices import ModelConfig
from simulators.errors import ScenarioError
from simulators.hostile import KINDS as HOSTILE_KINDS
from simulators.uplink import UplinkConfig

BUILTIN_DIR = Path(__file__).parent / "scenarios"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SPAN_S = 7 * 86400   # must stay well inside ingest's max_age_days (30)


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not found:
            raise ValueError(f"a duration is a number of seconds or like '90s', '10m', '2h', '1d'; not {value!r}")
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
    kinds: list[Literal[HOSTILE_KINDS]] = list(HOSTILE_KINDS)  # type: ignore[valid-type]
    every: Seconds = 60
    rounds: int = Field(1, ge=1, le=10_000)


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
    fire: list[Fire] = []
    cooking: list[Cooking] = []
    outage: list[Outage] = []
    hostile: list[Hostile] = []
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
        ends += [e.at + 60 for e in self.event]
        return min(max(ends), MAX_SPAN_S)


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


def parse(data: dict, source: str = "scenario") -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [f"{source}: {_where(e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise ScenarioError("\n".join(problems)) from None
    return scenario.model_copy(update={"name": scenario.name or source.removesuffix(".toml")})


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def combine(scenarios: list[Scenario]) -> Scenario:
    """One scenario doing everything the given ones do."""
    if not scenarios:
        return Scenario(name="quiet")
    devices: dict = {}
    uplink: dict = {}
    lists: dict[str, list] = {k: [] for k in ("fire", "cooking", "outage", "hostile", "event")}
    durations = []
    for s in scenarios:
        devices.update(s.devices.model_dump(exclude_unset=True))
        uplink.update(s.uplink.model_dump(exclude_unset=True))
        for k, v in lists.items():
            v.extend(getattr(s, k))
        durations.append(s.span_s())
    return Scenario(name="+".join(s.name for s in scenarios),
                    description="; ".join(s.description for s in scenarios if s.description),
                    duration=max(durations), devices=ModelConfig(**devices),
                    uplink=UplinkConfig(**uplink), **lists)
