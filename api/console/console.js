// firegrid duty console: the incidents of your area, live, and the buttons of the closed
// loop. No framework and no build step; served by the API (docs/console.md).
//
// Data flow: GET /v1/incidents for the lists, then GET /v1/incidents/events (server-sent
// events) for every change; "hello" and "resync" mean "read the lists again". Actions are
// the ordinary POST /v1/incidents/{id}/... routes. The session cookie is HttpOnly: this
// script never sees a credential except the token typed once into the login form.
//
// Pages to the logged-in worker come on the same stream ("page", after their incident) and
// from GET /v1/console/pages after each (re)connection; alarm.js rings each page_id once.
//
// Modules: i18n.js (the words, 中文 first), ui.js (building elements, times), cards.js
// (one incident as a card), alarm.js (the tone, vibration, notifications), and this file:
// state, the server, the screens.

import * as alarm from "./alarm.js";
import * as duty from "./duty.js";
import * as field from "./field.js";
import { mapOf } from "./map.js";
import { both, lang, setLang, t, TEXT } from "./i18n.js";
import { $, clock, el, now, OVERDUE_S, redrawTimers, setSkew } from "./ui.js";
import { card, late, person, telLink, waitingAck, worstFirst } from "./cards.js";

const HEADER = { "X-Firegrid-Console": "1" };
const OFFICERS = new Set(["community_duty", "street_duty", "admin"]);
const LADDER = new Set(["grid_worker", "grid_leader", "community_duty", "street_duty"]);
const DAY_MS = 24 * 3600 * 1000;   // how far back the resolved view looks

const state = {
  me: null,
  view: "open",            // the board shows "open" or "resolved" incidents
  incidents: new Map(),    // id -> summary (open ones)
  resolved: null,          // id -> summary (resolved in the window); null until read
  reading: 0,              // list reads in flight; meanwhile events are also kept in `held`
  held: [],
  source: null,
  detail: null,            // the incident shown in the detail view
  people: null,            // whom to call for it, who was paged and answered (the detail)
  who: new Map(),          // actor ("api:li-phone") -> {name, phone}: the person behind it
  asked: new Set(),        // "incident:actor" already asked about
  handoffTimer: null,      // re-reading the detail while its 119 hand-off is being sent
};

// --- the server --------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...HEADER } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, e.message);       // no answer at all: the network
  }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = data.detail;
    const msg = Array.isArray(d) ? d.map((e) => `${e.loc.at(-1)}: ${e.msg}`).join("; ") : d;
    if (r.status === 401 && path !== "/v1/console/login") showLogin(t("session_over"));
    throw new ApiError(r.status, msg || r.statusText);
  }
  return data;
}

// The API words its refusals in English; people read them in Chinese first, with the API's
// own words after them (they name the incident in the way).
function refusal(e) {
  const msg = e.message || "";
  if (lang === "en") return t("failed", { msg });
  const key = e.status === 0 ? "e_network"
    : /open for the same building and hazard/.test(msg) ? "e_reopen_held"
      : /only a resolved incident can be reopened/.test(msg) ? "e_reopen_open"
        : /reopen it first/.test(msg) ? "e_resolved"
          : /is already resolved/.test(msg) ? "e_already_resolved"
            : /already (exists|registered)/.test(msg) ? "e_id_taken"
              : /^device .* is retired/.test(msg) ? "e_device_retired"
            : TEXT.zh[`e_${e.status}`] ? `e_${e.status}` : e.status >= 500 ? "e_500" : null;
  return t("failed", { msg: key ? `${t(key)}（${msg}）` : msg });
}

async function readAll(query) {
  // The API pages its lists; an area rarely needs more than the first page.
  const found = new Map();
  for (let offset = 0; offset !== null;) {
    const page = await api(`/v1/incidents?${query}&limit=1000&offset=${offset}`);
    page.items.forEach((i) => found.set(i.id, i));
    offset = page.next_offset;
  }
  return found;
}

// --- rendering --------------------------------------------------------------------------

const isOfficer = () => document.body.classList.contains("officer");

const cardOf = (i, inDetail = false) => card(i, {
  inDetail, officer: isOfficer(), canAct: state.me?.can_act, onOpen: openDetail, onAct: perform,
  who: (actor) => state.who.get(actor),
});

// --- people: names and phones instead of token names ---------------------------------------

function learn(people) {
  let fresh = false;
  for (const a of people.answered) {
    if (a.name && !state.who.has(a.actor)) fresh = true;
    if (a.name) state.who.set(a.actor, { name: a.name, phone: a.phone });
  }
  return fresh;
}

async function learnActors(list) {
  // The cards name who has each incident or resolved it: ask once per incident and token.
  const asks = [];
  for (const i of list) {
    for (const actor of [i.on_site_by || i.acknowledged_by, i.resolved_by]) {
      const key = `${i.id}:${actor}`;
      if (!actor || state.who.has(actor) || state.asked.has(key)) continue;
      state.asked.add(key);
      asks.push(api(`/v1/console/incidents/${i.id}/people`).then(learn).catch(() => false));
    }
  }
  if (asks.length && (await Promise.all(asks)).some(Boolean)) {
    renderList();
    if (state.detail) renderDetail();
  }
}

// Same test as the API's `resolved_since`, so an event and a re-read agree.
const inWindow = (i) => Date.parse(i.resolved_at) >= now() - DAY_MS;

function openSorted() {
  // Worst first: confirmed fires, then warnings waiting for someone (cards.js).
  return [...state.incidents.values()].sort(worstFirst);
}

function resolvedSorted() {
  // The latest closed first: that is the one someone may be calling about.
  if (!state.resolved) return null;
  return [...state.resolved.values()].filter(inWindow).sort((a, b) =>
    (Date.parse(b.resolved_at) - Date.parse(a.resolved_at)) || (b.id - a.id));
}

function renderList() {
  // The devices and duty screens replace the list of incidents below the tabs.
  const fieldView = state.view === "devices" || state.view === "duty";
  $("field").hidden = state.view !== "devices";
  $("duty").hidden = state.view !== "duty";
  $("incidents").hidden = fieldView;
  $("open-count").textContent = String(state.incidents.size);
  if (fieldView) {
    $("empty").hidden = true;
    $("summary").hidden = true;
    for (const tab of document.querySelectorAll("#views [data-view]")) {
      tab.setAttribute("aria-selected", String(tab.dataset.view === state.view));
    }
    return;
  }
  const resolvedView = state.view === "resolved";
  const list = resolvedView ? resolvedSorted() : openSorted();
  $("incidents").replaceChildren(...(list ?? []).map((i) => el("li", {}, cardOf(i))));
  if (list) learnActors(list);
  const empty = $("empty");
  empty.hidden = list !== null && list.length > 0;
  empty.textContent = t(list === null ? "loading" : resolvedView ? "empty_resolved" : "empty");
  for (const tab of document.querySelectorAll("#views [data-view]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === state.view));
  }
  $("open-count").textContent = String(state.incidents.size);
  renderSummary(resolvedView);
}

function renderSummary(resolvedView) {
  // The officers' counts are about what is open, whichever view is shown below them.
  const summary = $("summary");
  summary.hidden = !isOfficer() || resolvedView;
  const open = [...state.incidents.values()];
  const count = (f) => open.filter(f).length;
  const cell = (n, key, hot) => el("div", { class: hot && n ? "hot" : "", "data-count": key },
                                   el("b", { text: String(n) }), el("span", { text: t(key) }));
  summary.replaceChildren(cell(open.length, "open_n"), cell(count(waitingAck), "unacked_n", true),
                          cell(count(late), "escalated_n", true),
                          cell(count((i) => i.severity === "confirmed"), "confirmed_n", true));
}

function renderWho() {
  const me = state.me;
  const areas = me.areas.length ? me.areas.map((a) => `${t(a.level)} ${a.name}`).join("、")
                                : t("all_areas");
  $("who").textContent = t("you", { name: me.worker_name || me.name, role: t(me.role), areas });
}

function renderStatic() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = lang === "zh" ? "消防网格值守台 · firegrid" : "firegrid duty console";
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  $("lang").textContent = lang === "zh" ? "English" : "中文";
  $("lang").lang = lang === "zh" ? "en" : "zh-CN";
  setLive($("live").dataset.live);
  const cause = $("cause");
  const chosen = cause.value;
  cause.replaceChildren(el("option", { value: "", text: "—" }),
    ...(state.me?.causes || []).map((c) => el("option", { value: c, text: both(c) })));
  cause.value = chosen;
}

function render() {
  renderStatic();
  if (state.me) { renderWho(); renderList(); alarm.render(); duty.render(); field.render(); }
  if (state.detail) renderDetail();
}

function setLive(mode, core) {
  const live = $("live");
  live.dataset.live = mode;
  // Whether an alert core runs (its heartbeat, read by the server): up, down, or not known
  // yet (an older server, or nothing read): then the screen does not claim it is down.
  if (core !== undefined) live.dataset.service = core === null ? "unknown" : core ? "up" : "down";
  renderLive();
  redrawTimers();
}

// "实时" only while it is true: the feed is connected, an alert core beats, and no rung is
// overdue (an overdue rung means no alert core is escalating, so the screen is not
// following the alarm, even if one beats).
function stalled() {
  const late = now() - OVERDUE_S * 1000;
  return [...state.incidents.values()].some((i) =>
    i.escalation.escalate_at && Date.parse(i.escalation.escalate_at) < late);
}

function renderLive() {
  const live = $("live");
  const mode = live.dataset.live;
  const core = mode !== "on" ? "ok" : live.dataset.service === "down" ? "down"
    : state.me && stalled() ? "stalled" : "ok";
  live.dataset.core = core;
  live.textContent = t(core === "down" ? "core_down" : core === "stalled" ? "core_stalled"
    : mode === "on" ? "live_on" : mode === "off" ? "live_off" : "connecting");
}

setInterval(renderLive, 1000);

// --- screens ----------------------------------------------------------------------------

function show(screen) {
  for (const id of ["login", "offline", "board", "detail"]) $(id).hidden = id !== screen;
  $("logout").hidden = screen === "login" || screen === "offline";
  $("live").hidden = screen === "login";
  window.scrollTo(0, 0);
}

function showLogin(message = "") {
  stopEvents();
  alarm.stop();
  state.me = null;
  state.detail = null;
  state.view = "open";
  state.incidents.clear();
  state.resolved = null;
  state.who.clear();
  state.asked.clear();
  duty.reset();
  $("login-error").textContent = message;
  show("login");
}

async function start(me) {
  state.me = me;
  setSkew(me.now);
  document.body.classList.toggle("officer", OFFICERS.has(me.role));
  document.querySelector('#views [data-view="devices"]').hidden = !me.can_field;
  document.querySelector('#views [data-view="duty"]').hidden = !duty.allowed(me.role);
  alarm.start(me.worker_id, { officer: OFFICERS.has(me.role), paged: LADDER.has(me.role),
                              onAck: (id, button) => perform(id, "acknowledge", button) });
  render();
  show("board");
  startEvents();
}

function setView(view) {
  if (view === state.view) return;
  state.view = view;
  // The window moves and events may have been missed while the view was away: read it
  // afresh each time rather than show a stale list.
  if (view === "resolved") state.resolved = null;
  renderList();
  if (view === "resolved") readLists().catch(() => {});
  if (view === "devices") field.open();
  if (view === "duty") duty.open(state.me).catch(() => {});
}

// --- the lists and the live feed --------------------------------------------------------

async function readLists() {
  // Events that arrive while the lists are read are applied at once and kept; each read
  // that completes replays them over what it read, so an older read never hides a newer
  // event. (Each event carries the whole incident: replaying one is harmless.)
  const since = new Date(now() - DAY_MS).toISOString();
  state.reading += 1;
  try {
    const [open, resolved] = await Promise.all([
      readAll("state=open"),
      state.view === "resolved"
        ? readAll(`state=resolved&resolved_since=${encodeURIComponent(since)}`) : null]);
    state.incidents = open;
    if (resolved) state.resolved = resolved;
    state.held.forEach(apply);
  } finally {
    state.reading -= 1;
    if (!state.reading) state.held = [];
  }
  renderList();
  alarm.settle(waiting);
  if (state.detail) refreshDetail();
  await readPages();
}

// Whether an incident still waits for someone to acknowledge it; null: not known here.
function waiting(id) {
  const i = state.incidents.get(id);
  return i ? waitingAck(i) : null;
}

async function readPages() {
  // Pages that came while this screen was closed or reconnecting: those of incidents still
  // waiting ring now; the ones it has shown (by page_id) do not ring again.
  if (!state.me?.worker_id) return;
  const pages = await api("/v1/console/pages");
  pages.forEach((p) => alarm.page(p, waiting));
}

function apply(i) {
  // Resolving moves an incident from the open list to the resolved one; reopening moves
  // it back.
  if (i.state === "resolved") {
    state.incidents.delete(i.id);
    if (state.resolved && inWindow(i)) state.resolved.set(i.id, i);
  } else {
    state.incidents.set(i.id, i);
    state.resolved?.delete(i.id);
  }
}

function onIncident(i) {
  if (state.reading) state.held.push(i);
  apply(i);
  renderList();
  alarm.settle(waiting);
  if (state.detail?.id === i.id) refreshDetail();
}

function startEvents() {
  stopEvents();
  setLive("connecting");
  const source = new EventSource("/v1/incidents/events");
  state.source = source;
  source.addEventListener("hello", (ev) => {
    const hello = JSON.parse(ev.data);
    setSkew(hello.now);
    setLive(hello.live ? "on" : "off", hello.core);
    readLists().catch(() => {});
  });
  source.addEventListener("resync", () => readLists().catch(() => {}));
  source.addEventListener("status", (ev) => {
    const status = JSON.parse(ev.data);
    setLive(status.live ? "on" : "off", status.core);
  });
  source.addEventListener("incident", (ev) => onIncident(JSON.parse(ev.data)));
  source.addEventListener("page", (ev) => alarm.page(JSON.parse(ev.data), waiting));
  source.addEventListener("error", () => {
    setLive("off");
    // EventSource retries by itself unless the server refused (401/403): then find out why.
    if (source.readyState === EventSource.CLOSED && state.source === source) {
      api("/v1/console/me").then(() => setTimeout(() => state.me && startEvents(), 3000))
        .catch(() => {});
    }
  });
}

function stopEvents() {
  if (state.source) state.source.close();
  state.source = null;
}

// --- actions and the detail view --------------------------------------------------------

async function perform(id, act, button) {
  if (act === "resolve") { openDetail(id, { focus: "cause" }); return; }
  if (act === "confirm") { openDetail(id, { focus: "confirm-note" }); return; }
  if (act === "steer") { openDetail(id, { focus: "escalate-to" }); return; }
  button.disabled = true;
  try {
    const done = await api(`/v1/incidents/${id}/${act}`, { method: "POST", body: {} });
    onIncident(done);
    if (state.detail?.id === id) { state.detail = done; renderDetail(); }
  } catch (e) {
    alert(refusal(e));
  } finally {
    button.disabled = false;
  }
}

async function readPeople(id) {
  try {
    const people = await api(`/v1/console/incidents/${id}/people`);
    if (state.detail?.id !== id) return;
    state.people = people;
    if (learn(people)) renderList();
  } catch { /* the detail still shows the incident */ }
}

async function openDetail(id, { focus = null } = {}) {
  try {
    state.detail = await api(`/v1/incidents/${id}`);
  } catch { return; }
  state.people = null;
  readPeople(id).then(() => { if (state.detail?.id === id) renderDetail(); });
  for (const field of ["note", "cause", "reopen-note", "confirm-note"]) $(field).value = "";
  for (const line of ["resolve-error", "reopen-error", "confirm-error"]) $(line).textContent = "";
  renderDetail();
  show("detail");
  if (focus) $(focus).focus();
}

async function refreshDetail() {
  const id = state.detail?.id;
  try {
    const fresh = await api(`/v1/incidents/${id}`);
    if (state.detail?.id === id) { state.detail = fresh; renderDetail(); }
    await readPeople(id);
    if (state.detail?.id === id) renderDetail();
  } catch (e) {
    if (e.status === 404 && state.detail?.id === id) closeDetail();
  }
}

function closeDetail() {
  state.detail = null;
  state.people = null;
  show("board");
  renderList();
}

function renderDetail() {
  const i = state.detail;
  const resolved = i.state === "resolved";
  $("detail-card").replaceChildren(cardOf(i, true));
  $("resolve-form").hidden = !state.me?.can_act || resolved;
  $("reopen-form").hidden = !state.me?.can_act || !resolved;
  $("confirm-form").hidden = !state.me?.can_act || resolved || i.severity !== "warning";
  renderHandoff(i);
  // Whether each device has since cleared or been hushed (from the people read).
  const since = new Map((state.people?.devices ?? []).map((d) => [d.device_id, d]));
  const quiet = (d) => d && (d.cleared_at || d.hushed_at);
  $("alerts").replaceChildren(...i.alerts.map((a) => el("li", { "data-device": a.device_id },
    el("time", { text: clock(a.received_at) }),
    [a.device_id, a.floor !== null ? t("floor", { n: a.floor }) : null, a.location,
     TEXT.zh[`rule_${a.rule}`] ? both(`rule_${a.rule}`) : a.rule,
     a.muted ? t("muted_alert") : null].filter(Boolean).join(" · "),
    since.get(a.device_id)?.cleared_at ? el("span", { class: "since", "data-since": "cleared",
      text: ` · ${t("cleared", { t: clock(since.get(a.device_id).cleared_at) })}` }) : null,
    since.get(a.device_id)?.hushed_at ? el("span", { class: "since", "data-since": "hushed",
      text: ` · ${t("hushed", { t: clock(since.get(a.device_id).hushed_at) })}` }) : null,
    mediaLinks(a.detail))));
  const devices = state.people?.devices ?? [];
  $("all-quiet").hidden = i.state === "resolved" || !devices.length || !devices.every(quiet);
  $("log").replaceChildren(...i.log.map((l) => el("li", {},
    el("time", { text: clock(l.at) }),
    `${t(`a_${l.action}`)} · ${state.who.get(l.actor)?.name ?? person(l.actor)}`,
    l.detail?.note ? ` · ${l.detail.note}` : "")));
  renderPeople();
  duty.renderSteer(i, state.people, state.me);
}

// A camera's snapshot and clip (the protocol's snapshot_url / clip_url, kept with the
// alert): links to look before going. Ingest takes only http(s) addresses; the check here
// also covers alerts stored before it did, since a javascript: href would run on a tap.
const WEB = /^https?:\/\/[^\s/?#]+/i;

function mediaLinks(detail) {
  return [["snapshot_url", "snapshot"], ["clip_url", "clip"]]
    .filter(([field]) => typeof detail?.[field] === "string" && WEB.test(detail[field]))
    .map(([field, key]) => [" · ", el("a", { class: "media", href: detail[field],
                                              target: "_blank", rel: "noopener noreferrer",
                                              "data-media": key, text: both(key) })]);
}

// The fire service's hand-off (the 119 hook's page) of a confirmed fire, as far as it went.
function renderHandoff(i) {
  const line = $("handoff");
  const call = i.pages.find((p) => p.channel === "fire_service");
  line.hidden = i.severity !== "confirmed";
  line.dataset.status = call?.status ?? "none";
  // The dispatcher marks the page sent without a change to the incident (no live event):
  // while it is being sent, read the incident again now and then.
  if (call?.status === "pending" && !state.handoffTimer) {
    state.handoffTimer = setTimeout(() => {
      state.handoffTimer = null;
      if (state.detail?.id === i.id) refreshDetail();
    }, 2000);
  }
  line.textContent = !call ? t("handoff_none") : t("handoff", {
    at: clock(call.created_at),
    status: t(call.status === "sent" ? "h_sent" : call.status === "failed" ? "h_failed"
                                                                           : "h_pending") });
}

// Whom to call (the people on duty for the building now, lowest rung first, each with a
// call button), and who was paged, on what, and whether they answered.
// Navigation links for the building: the phone's map app (geo:, RFC 5870, WGS-84), and
// Amap and Baidu Maps, the apps Chinese phones have, told the coordinates are WGS-84 (their
// own maps are in GCJ-02 / BD-09: they convert, so no conversion is done here).
function navLinks(b) {
  const name = encodeURIComponent(b.address);
  const link = (href, key) => el("a", { class: "nav", href, target: "_blank",
                                        rel: "noopener noreferrer", "data-nav": key,
                                        text: t(key) });
  return [
    link(`geo:${b.lat},${b.lon}?q=${b.lat},${b.lon}(${name})`, "nav_geo"),
    link(`https://uri.amap.com/marker?position=${b.lon},${b.lat}&name=${name}`
         + "&coordinate=wgs84&callnative=1", "nav_amap"),
    link(`https://api.map.baidu.com/marker?location=${b.lat},${b.lon}&title=${name}`
         + `&content=${name}&coord_type=wgs84&output=html&src=firegrid.console`, "nav_baidu"),
  ];
}

function renderPeople() {
  const people = state.people;
  $("people-box").hidden = !people;
  if (!people) return;
  const b = people.building;
  $("place").replaceChildren(el("b", { text: b.address }),
    ` · ${b.id} · ${t("floors_n", { n: b.floors })} `, ...navLinks(b));
  renderMap(people);
  // The building's own contact (landlord, manager): opens doors, knows who lives where.
  $("contact").replaceChildren(t("contact"),
    b.contact_name ? el("b", { text: b.contact_name }) : t("no_contact"),
    ...(b.contact_phone ? [" ", telLink(b.contact_phone,
                                        `${t("call_contact")} ${b.contact_phone}`)] : []));
  $("contact").dataset.phone = b.contact_phone ? "yes" : "no";
  const answered = new Set(people.answered.map((a) => a.worker_id).filter(Boolean));
  const call = (p) => (p.phone ? telLink(p.phone, `${t("call")} ${p.phone}`)
                               : el("span", { class: "muted", text: t("no_phone") }));
  const none = (key) => [el("li", { class: "muted", text: t(key) })];
  $("on-duty").replaceChildren(...(people.on_duty.length ? people.on_duty.map((p) =>
    el("li", { "data-worker": p.worker_id },
       el("b", { text: p.name }), ` · ${t(p.role)} `, call(p)))
    : none("nobody_on_duty")));
  $("paged").replaceChildren(...(people.paged.length ? people.paged.map((p) =>
    el("li", { "data-worker": p.worker_id, "data-answered": answered.has(p.worker_id) },
       el("time", { text: clock(p.first_paged_at) }),
       el("b", { text: p.name }), ` · ${t(p.role)} · `,
       p.channels.map((c) => t(`ch_${c}`)).join("、"), " · ",
       el("span", { class: "delivery", text: t(p.delivered ? "delivered" : "sending") }),
       answered.has(p.worker_id) ? el("span", { class: "answered", text: ` · ${t("answered")}` })
                                 : null, " ", call(p)))
    : none("nobody_paged")));
}

// The map is drawn once per building shown (not at every live event: its tiles would
// load again); none when no tile source is configured.
function renderMap(people) {
  const box = $("map-box");
  const key = people.map ? `${people.building.id}:${people.map.tiles}` : "";
  if (box.dataset.for === key) return;
  box.dataset.for = key;
  const map = mapOf(people.map, people.building, (plain) => box.replaceChildren(plain));
  box.replaceChildren(...(map ? [map] : []));
}

// The detail view's two forms: one POST each; a refusal (a 409 names the incident that is
// in the way) is shown under the form, as the API words it.
async function submit(ev, errorLine, path, body) {
  const button = ev.submitter || ev.target.querySelector("button");
  button.disabled = true;
  try {
    const done = await api(path, { method: "POST", body });
    onIncident(done);
    return done;
  } catch (e) {
    $(errorLine).textContent = refusal(e);
    return null;
  } finally {
    button.disabled = false;
  }
}

$("resolve-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const note = $("note").value.trim();
  if (!note) { $("resolve-error").textContent = t("note_needed"); return; }
  const body = { cause: $("cause").value, note };
  if (await submit(ev, "resolve-error", `/v1/incidents/${state.detail.id}/resolve`, body)) {
    closeDetail();
  }
});

$("confirm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const note = $("confirm-note").value.trim();
  const done = await submit(ev, "confirm-error", `/v1/incidents/${state.detail.id}/confirm`,
                            note ? { note } : {});
  if (done && state.detail?.id === done.id) { state.detail = done; renderDetail(); }
});

$("reopen-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const note = $("reopen-note").value.trim();
  if (!note) { $("reopen-error").textContent = t("reopen_needed"); return; }
  if (await submit(ev, "reopen-error", `/v1/incidents/${state.detail.id}/reopen`, { note })) {
    // Back to where the incident now is, and where whoever reopened it watches it climb.
    setView("open");
    closeDetail();
  }
});

// --- wiring -----------------------------------------------------------------------------

async function login(token) {
  $("login-error").textContent = "";
  try {
    const me = await api("/v1/console/login", { method: "POST", body: { token } });
    $("token").value = "";
    await start(me);
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? t("bad_token") : refusal(e);
  }
}

field.init({ api, refusal });
duty.init({ api, refusal, applied: (done) => {
  onIncident(done);
  if (state.detail?.id === done.id) { state.detail = done; renderDetail(); }
} });

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  login($("token").value.trim());
});

for (const tab of document.querySelectorAll("#views [data-view]")) {
  tab.addEventListener("click", () => setView(tab.dataset.view));
}

$("back").addEventListener("click", closeDetail);

$("lang").addEventListener("click", () => {
  setLang(lang === "zh" ? "en" : "zh");
  render();
});

$("logout").addEventListener("click", async () => {
  await api("/v1/console/logout", { method: "POST" }).catch(() => {});
  showLogin();
});

// Offline, the service worker still serves the page: say so, and try again by itself.
let retry = null;

function offline() {
  document.body.dataset.offline = "true";
  show("offline");
  setLive("off");
  clearTimeout(retry);
  retry = setTimeout(boot, 5000);
  window.addEventListener("online", boot, { once: true });
}

async function boot() {
  clearTimeout(retry);
  delete document.body.dataset.offline;
  renderStatic();
  // An installable app with an offline shell; notifications go through it where the
  // browser wants them to (Android's Chrome has no `new Notification`).
  navigator.serviceWorker?.register("sw.js").catch(() => {});
  // A login link: /console/#token=fg_... The fragment never reaches the server or its logs;
  // it is taken off the address bar before anything else happens.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    history.replaceState(null, "", location.pathname + location.search);
    await login(token);
    return;
  }
  try {
    await start(await api("/v1/console/me"));
  } catch (e) {
    if (e.status === 0) offline();
    else showLogin();
  }
}

boot();
