// The field team's screen (技术员 / field technicians and admins): find a device by typing
// its id or scanning its code with the phone's camera, register it to a building, floor and
// room, move it, replace it by a new unit, retire it, and register an unknown id that is
// already talking (quarantine).
// Everything goes through the ordinary /v1/devices and /v1/quarantine routes
// (docs/api.md); a new device's MQTT password is shown once, as the API answers it.

import { both, lang, t, TEXT } from "./i18n.js";
import { $, clock, el } from "./ui.js";

let api = null;         // console.js's fetch wrapper
let refusal = null;     // the API's refusal, in the reader's words
let shown = null;       // the device on screen
let scanning = null;    // the camera stream while scanning

const fact = (label, value) => [el("dt", { text: t(label) }), el("dd", { text: value ?? "—" })];
// Another device's id as a button that shows it (a replacement's link, both ways).
const deviceFact = (label, id) => [el("dt", { text: t(label) }), el("dd", {},
  el("button", { type: "button", class: "link", "data-find": id, text: id,
                 onclick: () => find(id) }))];

export function init(deps) {
  ({ api, refusal } = deps);
  $("scan").hidden = !("BarcodeDetector" in window && navigator.mediaDevices?.getUserMedia);
}

// The language changed: the device on screen in the new words.
export function render() {
  if (shown && !$("device-view").hidden) renderDevice();
}

export function open() {
  reset();
  readQuarantine();
  $("device-id").focus();
}

function reset() {
  shown = null;
  stopScan();
  for (const id of ["device-view", "register-form", "credentials"]) $(id).hidden = true;
  for (const id of ["find-error", "replace-result"]) $(id).textContent = "";
}

// --- finding ---------------------------------------------------------------------------------

async function find(id) {
  reset();
  $("device-id").value = id;
  try {
    shown = await api(`/v1/devices/${encodeURIComponent(id)}`);
    renderDevice();
  } catch (e) {
    if (e.status !== 404) { $("find-error").textContent = refusal(e); return; }
    // Not registered: the form to register it, for this id.
    $("register-id").textContent = id;
    $("register-form").dataset.quarantined = String(await inQuarantine(id));
    $("register-form").hidden = false;
    $("register-error").textContent = "";
    $("register-building").focus();
  }
}

async function inQuarantine(id) {
  try {
    const page = await api("/v1/quarantine?limit=1000");
    return page.items.some((q) => q.device_id === id);
  } catch { return false; }
}

function renderDevice() {
  const d = shown;
  $("device-view").hidden = false;
  $("device-facts").replaceChildren(...[
    fact("d_id", d.id), fact("d_kind", t(`k_${d.kind}`)), fact("d_state", t(`ds_${d.state}`)),
    fact("d_building", d.building_id),
    fact("d_floor", d.floor === null ? null : t("floor", { n: d.floor })),
    fact("d_location", d.location || null),
    fact("d_last_seen", d.last_seen ? clock(d.last_seen) : t("never")),
    fact("d_battery", d.battery_pct === null ? null : `${d.battery_pct}%`),
    d.replaces ? deviceFact("d_replaces", d.replaces) : [],
    d.replaced_by ? deviceFact("d_replaced_by", d.replaced_by) : [],
  ].flat());
  $("device-view").dataset.state = d.state;
  const retired = d.state === "retired";
  renderTickets(d.open_tickets);
  readRecent(d.id);
  $("move-form").hidden = retired;
  $("replace-form").hidden = retired;
  $("replace-id").value = "";
  $("replace-model").value = "";
  $("retire").hidden = retired;
  $("retire").dataset.armed = "";
  $("retire").textContent = t("retire");
  $("move-building").value = d.building_id;
  $("move-floor").value = d.floor ?? "";
  $("move-location").value = d.location;
  $("move-error").textContent = "";
}

// --- what the device has been saying: open tickets, last readings and events -----------------

const RECENT = 5;
const none = (key) => [el("li", { class: "muted", text: t(key) })];

// Readings can be days old (a detector reports hourly, or went silent): the date too.
const stamp = (iso) => new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB",
  { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });

function renderTickets(tickets) {
  $("device-tickets").replaceChildren(...(tickets.length ? tickets.map((k) =>
    el("li", { "data-condition": k.condition }, el("time", { text: stamp(k.opened_at) }),
       ` ${t(`c_${k.condition}`)}`, k.detail ? ` · ${k.detail}` : ""))
    : none("no_tickets")));
}

// One status report as a line: the values a technician checks on site.
function readingText(r) {
  const parts = r.kind === "camera" ? [
    t(r.stream_online ? "r_stream_on" : "r_stream_off"),
    t(r.recording ? "r_recording" : "r_not_recording"),
    t("r_storage", { n: r.storage_free_mb }),
  ] : [
    t("r_smoke", { n: r.obscuration_db_m }),
    t("r_battery", { n: r.battery_pct, v: r.battery_v }),
    t("r_signal", { n: r.rsrp_dbm }),
  ];
  if (r.temperature_c !== null) parts.splice(1, 0, t("r_temp", { n: r.temperature_c.toFixed(1) }));
  return parts.join(" · ");
}

function eventText(e) {
  const a = e.attrs || {};
  const detail = a.code ?? (a.state ? t(`tp_${a.state}`) : a.result ? t(`res_${a.result}`)
    : null) ?? (a.battery_pct !== undefined
    ? `${a.battery_pct}%` : a.confidence !== undefined ? `${Math.round(a.confidence * 100)}%`
      : a.duration_s !== undefined ? `${a.duration_s} s` : a.active !== undefined
        ? t(a.active ? "ev_started" : "ev_ended") : null);
  const word = TEXT.zh[`ev_${e.type}`] ? both(`ev_${e.type}`) : e.type;
  return detail === null ? word : `${word} · ${detail}`;
}

async function readRecent(id) {
  // Two small reads; the facts above are already shown, and stay if these fail.
  const path = `/v1/devices/${encodeURIComponent(id)}`;
  try {
    const [readings, events] = await Promise.all([
      api(`${path}/readings?limit=${RECENT}`), api(`${path}/events?limit=${RECENT}`)]);
    if (shown?.id !== id) return;
    $("device-readings").replaceChildren(...(readings.items.length ? readings.items.map((r) =>
      el("li", { "data-reading": r.ts }, el("time", { text: stamp(r.ts) }),
         ` ${readingText(r)}`)) : none("no_readings")));
    $("device-events").replaceChildren(...(events.items.length ? events.items.map((e) =>
      el("li", { "data-event": e.type }, el("time", { text: stamp(e.ts) }),
         ` ${eventText(e)}`)) : none("no_events")));
  } catch { /* the rest of the screen works without them */ }
}

// --- scanning a code with the camera ---------------------------------------------------------

async function scan() {
  if (scanning) { stopScan(); return; }
  const video = $("scan-video");
  try {
    scanning = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (e) {
    $("find-error").textContent = t("no_camera");
    return;
  }
  video.srcObject = scanning;
  video.hidden = false;
  await video.play();
  const detector = new window.BarcodeDetector();
  const look = async () => {
    if (!scanning) return;
    try {
      const [code] = await detector.detect(video);
      if (code?.rawValue) { stopScan(); find(code.rawValue.trim()); return; }
    } catch { /* a frame that could not be read */ }
    requestAnimationFrame(look);
  };
  look();
}

function stopScan() {
  scanning?.getTracks().forEach((track) => track.stop());
  scanning = null;
  $("scan-video").hidden = true;
}

// --- changes ---------------------------------------------------------------------------------

const placement = (prefix) => {
  const floor = $(`${prefix}-floor`).value.trim();
  return { building_id: $(`${prefix}-building`).value.trim(),
           floor: floor === "" ? null : Number(floor),
           location: $(`${prefix}-location`).value.trim() };
};

async function register(ev) {
  ev.preventDefault();
  const id = $("register-id").textContent;
  const body = { kind: $("register-kind").value, ...placement("register") };
  const quarantined = $("register-form").dataset.quarantined === "true";
  try {
    const creds = quarantined
      ? await api(`/v1/quarantine/${encodeURIComponent(id)}/claim`, { method: "POST", body })
      : await api("/v1/devices", { method: "POST", body: { id, ...body } });
    $("register-form").hidden = true;
    showCredentials(creds);
    shown = await api(`/v1/devices/${encodeURIComponent(id)}`);
    renderDevice();
    readQuarantine();
  } catch (e) {
    $("register-error").textContent = refusal(e);
  }
}

function showCredentials(creds) {
  $("cred-username").textContent = creds.username;
  $("cred-password").textContent = creds.password;
  $("credentials").hidden = false;
}

async function replaceWith(ev) {
  // The new unit takes the old one's place in one step; its password is shown once.
  ev.preventDefault();
  const old = shown.id;
  const body = { id: $("replace-id").value.trim(), model: $("replace-model").value.trim() };
  try {
    const creds = await api(`/v1/devices/${encodeURIComponent(old)}/replace`,
                            { method: "POST", body });
    shown = await api(`/v1/devices/${encodeURIComponent(creds.id)}`);
    $("device-id").value = creds.id;
    renderDevice();
    showCredentials(creds);
    $("replace-result").textContent = t("replaced", { id: creds.id, old });
    $("replace-result").dataset.ok = "true";
    $("credentials").scrollIntoView();     // the password, shown this once
  } catch (e) {
    $("replace-result").textContent = refusal(e);
    $("replace-result").dataset.ok = "false";
  }
}

async function move(ev) {
  ev.preventDefault();
  try {
    shown = await api(`/v1/devices/${encodeURIComponent(shown.id)}/move`,
                      { method: "POST", body: placement("move") });
    renderDevice();
    $("move-error").textContent = t("moved");
  } catch (e) {
    $("move-error").textContent = refusal(e);
  }
}

async function retire() {
  // Two taps: retiring deletes the device's credentials for good.
  const button = $("retire");
  if (!button.dataset.armed) {
    button.dataset.armed = "true";
    button.textContent = t("retire_sure");
    return;
  }
  try {
    shown = await api(`/v1/devices/${encodeURIComponent(shown.id)}/retire`, { method: "POST" });
    renderDevice();
  } catch (e) {
    $("move-error").textContent = refusal(e);
  }
}

async function readQuarantine() {
  try {
    const page = await api("/v1/quarantine?limit=50");
    $("quarantine").replaceChildren(...(page.items.length ? page.items.map((q) =>
      el("li", { "data-device": q.device_id },
         el("time", { text: clock(q.last_seen) }), " ",
         el("button", { type: "button", class: "link", text: q.device_id,
                        onclick: () => find(q.device_id) })))
      : [el("li", { class: "muted", text: t("quarantine_empty") })]));
  } catch { /* the rest of the screen works without it */ }
}

$("find-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("device-id").value.trim();
  if (id) find(id);
});
$("scan").addEventListener("click", scan);
$("register-form").addEventListener("submit", register);
$("move-form").addEventListener("submit", move);
$("replace-form").addEventListener("submit", replaceWith);
$("retire").addEventListener("click", retire);
