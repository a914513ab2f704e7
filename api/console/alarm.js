// The alarm: a page to you rings on this screen (the tone, vibration, and a notification
// when the page is in the background) until its incident is acknowledged, by you or by
// anyone. Each page rings once per page_id, however often the live stream or a re-read
// brings it (docs/alerts.md, "What the worker app should do"; docs/console.md).
//
// Browsers play sound only after the person has tapped the page once: until then the
// banner "声音已关闭，点此开启" says so, and a tap on it turns the sound on (and asks for
// notifications).
//
// The page's own state, for people and tests: body[data-sound] "on" | "off",
// body[data-alarm] "ringing" | "quiet", body[data-heard] how many deliveries of pages came
// (repeats included), body[data-rings] how many distinct pages rang, body[data-notified]
// how many notifications were raised, and the <audio id="tone">.

import { t } from "./i18n.js";
import { $, el } from "./ui.js";

const KEEP_MS = 3 * 24 * 3600 * 1000;   // page ids remembered this long (and at most KEEP_N)
const KEEP_N = 5000;
const VIBRATE = [700, 300, 700, 300, 700];
const VIBRATE_EVERY_MS = 4000;

const alarm = {
  storeKey: null,
  seen: new Map(),          // page_id -> when it was first shown (ms)
  ringing: new Map(),       // incident id -> its newest page, while it waits for someone
  notes: new Map(),         // incident id -> Notification
  heard: 0,
  rings: 0,
  notified: 0,
  vibrating: null,
  wakeLock: null,
  officer: false,
  onAck: null,              // (incident id, button) => acknowledge it
};

const tone = () => $("tone");
const body = () => document.body.dataset;

// --- remembering what rang ------------------------------------------------------------------

function load(workerId) {
  alarm.storeKey = workerId ? `fg-pages:${workerId}` : null;
  alarm.seen = new Map();
  if (!alarm.storeKey) return;
  try {
    const kept = JSON.parse(localStorage.getItem(alarm.storeKey) || "[]");
    const since = Date.now() - KEEP_MS;
    for (const [id, at] of kept) if (at >= since) alarm.seen.set(id, at);
  } catch { /* a damaged entry: start afresh */ }
}

function save() {
  if (!alarm.storeKey) return;
  const kept = [...alarm.seen].slice(-KEEP_N);
  try { localStorage.setItem(alarm.storeKey, JSON.stringify(kept)); } catch { /* full */ }
}

// --- start and stop -------------------------------------------------------------------------

// opts: officer (keep the screen on), onAck(incidentId, button), paged (the role is on
// the ladder: without pages, no sound to turn on).
export function start(workerId, { officer = false, onAck = null, paged = true } = {}) {
  load(workerId);
  alarm.officer = officer;
  alarm.onAck = onAck;
  alarm.ringing.clear();
  body().rings = String(alarm.rings);
  body().heard = String(alarm.heard);
  body().alarm = "quiet";
  if (paged && workerId) probeSound();
  else $("sound-off").hidden = true;
  keepAwake();
  render();
}

export function stop() {
  alarm.ringing.clear();
  quiet();
  alarm.officer = false;
  alarm.wakeLock?.release().catch(() => {});
  alarm.wakeLock = null;
  render();
}

// --- pages ----------------------------------------------------------------------------------

// A page from the stream or GET /v1/console/pages. waiting(id): true or false when the
// console knows the incident (it still waits for an acknowledgement), null when it does not.
export function page(p, waiting) {
  alarm.heard += 1;
  body().heard = String(alarm.heard);
  const known = waiting(p.incident_id);
  const open = known ?? (p.incident_state === "raised" || p.incident_state === "notified");
  if (alarm.seen.has(p.page_id)) {
    // Shown before: the stream sends a page again with each change of its incident, a
    // re-read after reconnecting brings it back, the broker may redeliver it. Not a new
    // ring, no new notification; but after a reload, an incident that still waits for
    // someone goes on ringing.
    if (open && known !== null && !alarm.ringing.has(p.incident_id)) {
      alarm.ringing.set(p.incident_id, p);
      ring();
      render();
    }
    return;
  }
  alarm.seen.set(p.page_id, Date.now());
  save();
  if (!open && known === null) return;   // an old page of an incident no longer shown
  alarm.rings += 1;
  body().rings = String(alarm.rings);
  if (open) {
    alarm.ringing.set(p.incident_id, p);
    ring();
  } else {
    // Someone has it already (say, a confirmed fire after the grid worker took the
    // warning): one round of the tone, no repeat.
    once();
  }
  notify(p);
  render();
}

// After any change: stop ringing for incidents nobody needs to be called to any more.
export function settle(waiting) {
  let changed = false;
  for (const id of [...alarm.ringing.keys()]) {
    if (!waiting(id)) {
      alarm.ringing.delete(id);
      alarm.notes.get(id)?.close();
      alarm.notes.delete(id);
      changed = true;
    }
  }
  if (!changed) return;
  if (!alarm.ringing.size) quiet();
  render();
}

// --- the tone and vibration -----------------------------------------------------------------

async function play(loop) {
  const audio = tone();
  audio.loop = loop;
  audio.volume = 1;
  try {
    await audio.play();
    setSound(true);
  } catch (e) {
    if (e.name === "NotAllowedError") setSound(false);
  }
}

function ring() {
  body().alarm = "ringing";
  if (tone().paused || !tone().loop) play(true);
  if (!alarm.vibrating && navigator.vibrate) {
    navigator.vibrate(VIBRATE);
    alarm.vibrating = setInterval(() => navigator.vibrate(VIBRATE), VIBRATE_EVERY_MS);
  }
}

function once() {
  if (alarm.ringing.size) return;            // already ringing
  play(false);
  navigator.vibrate?.(VIBRATE);
}

function quiet() {
  body().alarm = "quiet";
  const audio = tone();
  audio.pause();
  audio.currentTime = 0;
  if (alarm.vibrating) clearInterval(alarm.vibrating);
  alarm.vibrating = null;
  navigator.vibrate?.(0);
  for (const n of alarm.notes.values()) n.close();
  alarm.notes.clear();
}

function setSound(on) {
  body().sound = on ? "on" : "off";
  $("sound-off").hidden = on;
}

// Whether the browser lets this page play sound yet: play the tone silently.
async function probeSound() {
  const audio = tone();
  audio.volume = 0;
  audio.loop = false;
  try {
    await audio.play();
    setSound(true);
    if (!alarm.ringing.size) { audio.pause(); audio.currentTime = 0; }
  } catch (e) {
    if (e.name === "NotAllowedError") setSound(false);
  } finally {
    audio.volume = 1;
  }
}

async function enableSound() {
  // A tap: the browser now allows sound, and may ask about notifications.
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
  if (alarm.ringing.size) await play(true);
  else await probeSound();
}

// --- notifications and the screen -----------------------------------------------------------

async function notify(p) {
  if (document.visibilityState !== "hidden") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const title = `${t(`sev_${p.severity || "warning"}`)}：${p.building.address}`;
  const options = { body: t("ring_body", { address: p.building.address }), tag: p.key,
                    renotify: true, requireInteraction: true, icon: "icon.svg" };
  alarm.notes.get(p.incident_id)?.close();
  try {
    // Through the service worker where there is one (the only way on Android's Chrome;
    // a click there brings the console forward, sw.js), else the page's own.
    const reg = await navigator.serviceWorker?.getRegistration();
    let note;
    if (reg?.active) {
      await reg.showNotification(title, options);
      note = { close: () => reg.getNotifications({ tag: p.key })
        .then((ns) => ns.forEach((n) => n.close())).catch(() => {}) };
    } else {
      const n = new Notification(title, options);
      n.onclick = () => { window.focus(); n.close(); };
      note = n;
    }
    alarm.notes.set(p.incident_id, note);
    alarm.notified += 1;
    body().notified = String(alarm.notified);
  } catch { /* refused by the browser: the tone and the banner remain */ }
}

async function keepAwake() {
  // The officer's board stays on through the night shift (a wake lock is released when the
  // tab is hidden; it is taken again when it comes back).
  if (!alarm.officer || !("wakeLock" in navigator) || document.visibilityState !== "visible") {
    return;
  }
  try { alarm.wakeLock = await navigator.wakeLock.request("screen"); } catch { /* refused */ }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") keepAwake();
  else for (const p of alarm.ringing.values()) if (!alarm.notes.has(p.incident_id)) notify(p);
});

// --- the banner -----------------------------------------------------------------------------

export function render() {
  const banner = $("ring");
  const ringing = [...alarm.ringing.values()];
  banner.hidden = !ringing.length;
  if (!ringing.length) { banner.replaceChildren(); return; }
  // The worst first: a confirmed fire before a warning, then the newest page.
  const top = ringing.reduce((a, b) =>
    ((b.severity === "confirmed") - (a.severity === "confirmed") || b.page_id - a.page_id) > 0
      ? b : a);
  const ack = el("button", { type: "button", "data-act": "acknowledge", text: t("acknowledge"),
                             onclick: (ev) => alarm.onAck?.(top.incident_id, ev.target) });
  banner.replaceChildren(
    el("p", { class: "ring-title", "data-incident": top.incident_id,
              text: `${t(`sev_${top.severity || "warning"}`)}：${top.building.address}` }),
    el("p", { class: "ring-more", text: t("ring_waiting", { n: ringing.length }) }),
    ack);
}

$("sound-off").addEventListener("click", enableSound);
