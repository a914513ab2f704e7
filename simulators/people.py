"""People in the simulator: grid workers, grid leaders and duty officers who get pages on
their phones and act on them through the HTTP API, as a street office's people do.

    people = enlist(conn, roles)                     # a token each, from the registry
    crowd = Crowd(people, PeopleConfig(), api=httpx.Client(base_url=...), mqtt_host=...,
                  mqtt_port=..., page_prefix=..., cause_of=...)
    crowd.start(); ...; crowd.stop(); crowd.actions  # what each person did, and when

Each person draws once, from the seed, whether they ever answer (`silent`): a phone left at
home, a worker asleep through it. The others, for each incident paged to them, wait a drawn
delay and then look at it (GET): if somebody already has it they leave it, otherwise they
acknowledge it. The one who acknowledged follows it through: field people (grid workers
and leaders) go there (arrive), confirm it when the ground truth says it is a fire, and
resolve it with the cause the truth knows (`cause_of(building_id)`); duty officers at a
board confirm a fire they can see on video (and leave it open for the people on the
ground), and resolve anything else from the desk. A confirmed fire's
page to someone who already handles it changes nothing.

Pages arrive as a phone gets them: one subscriber on the page topics at QoS 1 (a phone per
person would be 650 connections for the same bytes), deduplicated on `page_id` as the app
contract says (docs/alerts.md): a redelivered page is counted in `repeats`, not acted on.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, NamedTuple

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.auth import issue_token, revoke_token

log = logging.getLogger(__name__)

FIELD_ROLES = ("grid_worker", "grid_leader")
DESK_ROLES = ("community_duty", "street_duty")
_TAKEN = ("acknowledged", "on_site", "resolved")


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"a delay range is [low, high] with low <= high; not {list(pair)}")
    return pair


Delay = Annotated[tuple[Annotated[float, Field(ge=0, le=86400)],
                        Annotated[float, Field(ge=0, le=86400)]], AfterValidator(_ordered)]


class Habits(BaseModel):
    """How one kind of person answers: delays are seconds, drawn uniformly in [low, high]."""
    model_config = ConfigDict(extra="forbid")
    silent: float = Field(0.3, ge=0, le=1, description="share who never answer a page")
    acknowledge_s: Delay = Field((5.0, 50.0), description="page on the phone -> acknowledged")
    arrive_s: Delay = Field((60.0, 240.0), description="acknowledged -> on site (field people)")
    confirm_s: Delay = Field((10.0, 60.0), description="on site (or at the board) -> confirmed,"
                                                      " when it is a fire")
    resolve_s: Delay = Field((60.0, 300.0), description="on site or confirmed -> resolved")


class PeopleConfig(BaseModel):
    """The [people] table of a scenario file (docs/simulators.md)."""
    model_config = ConfigDict(extra="forbid")
    seed: int = 1
    field: Habits = Habits()                                   # a phone in a pocket
    desk: Habits = Habits(acknowledge_s=(5.0, 25.0))           # an officer at a board

    def habits(self, role: str) -> Habits:
        return self.desk if role in DESK_ROLES else self.field


class Person(NamedTuple):
    worker_id: str
    role: str
    token: str


def enlist(conn: psycopg.Connection[Any], roles: tuple[str, ...] = FIELD_ROLES + DESK_ROLES,
           prefix: str = "sim") -> list[Person]:
    """Every active worker in `roles`, each with a fresh API token named <prefix>-<id>
    (a previous run's token of that name is revoked first, so runs repeat)."""
    people = []
    for worker_id, role in conn.execute(
            "SELECT id, role FROM workers WHERE active AND role = ANY(%s) ORDER BY id",
            [list(roles)]).fetchall():
        name = f"{prefix}-{worker_id}"
        old = conn.execute("SELECT id FROM api_tokens WHERE name = %s AND revoked_at IS NULL",
                           [name]).fetchone()
        if old:
            revoke_token(conn, old[0], actor="simulator")
        people.append(Person(worker_id, role,
                             issue_token(conn, name, role, worker_id, actor="simulator")[1]))
    return people


class Crowd:
    def __init__(self, people: list[Person], config: PeopleConfig, *, api: httpx.Client,
                 mqtt_host: str, mqtt_port: int, page_prefix: str,
                 cause_of: Callable[[str], str], silent: set[str] | None = None,
                 client_id: str = "sim-people") -> None:
        """`silent`: who never answers; drawn from the seed and the habits when None."""
        self.config = config
        self._people = {p.worker_id: p for p in people}
        rng = random.Random(config.seed)
        self.silent = silent if silent is not None else {
            p.worker_id for p in sorted(people) if rng.random() < config.habits(p.role).silent}
        self._rng = random.Random(config.seed + 1)
        self._cause_of = cause_of
        self._api = api             # the API's base URL; the caller closes it
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="person")
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._agenda: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._stopping = False
        self._pages_seen: set[int] = set()
        self._looked: set[tuple[str, int]] = set()       # (person, incident) already handled
        self.actions: list[dict[str, Any]] = []          # the truth: who did what, when
        self.repeats = 0                                 # redelivered pages, not shown again
        self._topic = f"{page_prefix.rstrip('/')}/+/pages"
        self._mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._mqtt.on_connect = lambda c, *a: c.subscribe(self._topic, qos=1)
        self._mqtt.on_message = lambda c, u, msg: self._page(msg.topic, bytes(msg.payload))
        self._mqtt_addr = (mqtt_host, mqtt_port)
        self._subscribed = threading.Event()
        self._mqtt.on_subscribe = lambda *a: self._subscribed.set()
        self._clock = threading.Thread(target=self._run_agenda, name="people", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = 10) -> Crowd:
        self._clock.start()
        self._mqtt.connect(*self._mqtt_addr)
        self._mqtt.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise RuntimeError("people: no subscription to the page topics")
        return self

    def stop(self) -> None:
        self._mqtt.disconnect()
        self._mqtt.loop_stop()
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._clock.join()
        self._pool.shutdown(wait=True)

    def done(self, what: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.actions if a["action"] == what]

    # --- pages ----------------------------------------------------------------------------

    def _page(self, topic: str, payload: bytes) -> None:
        worker = topic.rsplit("/", 2)[-2]
        try:
            page = json.loads(payload)
            page_id, kind = int(page["page_id"]), page["kind"]
        except (ValueError, KeyError, TypeError):
            self._record(worker, "unreadable_page", None, topic=topic)
            return
        with self._lock:
            if page_id in self._pages_seen:
                self.repeats += 1
                return
            self._pages_seen.add(page_id)
        person = self._people.get(worker)
        if person is None or kind != "incident":
            return                               # a technician's ticket, or not one of us
        incident = int(page["incident_id"])
        self._record(worker, "paged", incident, page_id=page_id, step=page["step"],
                     severity=page["severity"], building=page["building"]["id"])
        key = (worker, incident)
        with self._lock:
            if worker in self.silent or key in self._looked:
                return
            self._looked.add(key)
        building = page["building"]["id"]
        self._after(self._draw(person, "acknowledge_s"),
                    lambda: self._acknowledge(person, incident, building))

    # --- what a person does ---------------------------------------------------------------

    def _acknowledge(self, person: Person, incident: int, building: str) -> None:
        now = self._get(person, incident)
        if now is None:
            return
        if now["state"] in _TAKEN:
            self._record(person.worker_id, "left_it", incident, state=now["state"])
            return
        if not self._post(person, incident, "acknowledge", {"note": "模拟 simulated"}):
            return
        fire = self._cause_of(building) == "real_fire"
        if person.role in DESK_ROLES:
            # At the board: a fire is confirmed from the camera or a call to the grid, and
            # left open for the people there; anything else is closed from the desk.
            if fire:
                self._after(self._draw(person, "confirm_s"),
                            lambda: self._confirm(person, incident))
            else:
                self._after(self._draw(person, "resolve_s"),
                            lambda: self._resolve(person, incident, building))
            return
        self._after(self._draw(person, "arrive_s"),
                    lambda: self._arrive(person, incident, building, fire))

    def _arrive(self, person: Person, incident: int, building: str, fire: bool) -> None:
        if not self._post(person, incident, "arrive", {"note": "模拟 on site"}):
            return
        later = self._draw(person, "confirm_s") if fire else 0.0
        if fire:
            self._after(later, lambda: self._confirm(person, incident))
        self._after(later + self._draw(person, "resolve_s"),
                    lambda: self._resolve(person, incident, building))

    def _confirm(self, person: Person, incident: int) -> None:
        now = self._get(person, incident)
        if now is None or now["severity"] == "confirmed" or now["state"] == "resolved":
            return
        self._post(person, incident, "confirm", {"note": "模拟 看到明火 flames seen"})

    def _resolve(self, person: Person, incident: int, building: str) -> None:
        cause = self._cause_of(building)
        self._post(person, incident, "resolve",
                   {"cause": cause, "note": f"模拟 simulated: {cause}"})

    # --- the API --------------------------------------------------------------------------

    def _headers(self, person: Person) -> dict[str, str]:
        return {"Authorization": f"Bearer {person.token}"}

    def _get(self, person: Person, incident: int) -> dict[str, Any] | None:
        try:
            got = self._api.get(f"/v1/incidents/{incident}", headers=self._headers(person))
        except httpx.HTTPError as exc:
            self._record(person.worker_id, "api_error", incident, error=str(exc))
            return None
        if got.status_code != 200:
            self._record(person.worker_id, "refused", incident, status=got.status_code,
                         body=got.text[:200])
            return None
        body: dict[str, Any] = got.json()
        return body

    def _post(self, person: Person, incident: int, action: str, body: dict[str, Any]) -> bool:
        try:
            got = self._api.post(f"/v1/incidents/{incident}/{action}", json=body,
                                 headers=self._headers(person))
        except httpx.HTTPError as exc:
            self._record(person.worker_id, "api_error", incident, error=str(exc), of=action)
            return False
        if got.status_code != 200:
            self._record(person.worker_id, "refused", incident, status=got.status_code,
                         of=action, body=got.text[:200])
            return False
        self._record(person.worker_id, action, incident)
        return True

    # --- the clock ------------------------------------------------------------------------

    def _draw(self, person: Person, what: str) -> float:
        low, high = getattr(self.config.habits(person.role), what)
        with self._lock:
            return float(self._rng.uniform(low, high))

    def _after(self, delay_s: float, act: Callable[[], None]) -> None:
        with self._wake:
            self._seq += 1
            heapq.heappush(self._agenda, (time.monotonic() + delay_s, self._seq, act))
            self._wake.notify()

    def _run_agenda(self) -> None:
        with self._wake:
            while not self._stopping:
                if not self._agenda:
                    self._wake.wait()
                    continue
                due = self._agenda[0][0] - time.monotonic()
                if due > 0:
                    self._wake.wait(due)
                    continue
                _, _, act = heapq.heappop(self._agenda)
                self._pool.submit(self._safely, act)

    def _safely(self, act: Callable[[], None]) -> None:
        try:
            act()
        except Exception:      # one person's failure must not stop the others
            log.exception("people: an action failed")

    def _record(self, worker: str, action: str, incident: int | None, **detail: Any) -> None:
        row = {"at": time.time(), "worker": worker, "action": action, "incident": incident,
               **detail}
        with self._lock:
            self.actions.append(row)
