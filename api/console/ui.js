// Small helpers for building the page and showing times. Data always goes into the page as
// text (textContent, attributes), never as HTML: addresses and notes are typed by people.

import { lang, t } from "./i18n.js";

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// --- time -------------------------------------------------------------------------------

// Timers count against the server's clock: a phone's clock can be minutes off, and an
// escalation countdown that is wrong by minutes is worse than none.
let skew = 0;              // server clock minus ours, ms
export const now = () => Date.now() + skew;
export const setSkew = (iso) => { skew = Date.parse(iso) - Date.now(); };

export function span(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export const clock = (iso) => new Date(iso).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB",
  { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// A timer element: counts up from data-from, or down to data-to, redrawn every second.
export function timer(kind, iso, label = null) {
  const node = el("span", { class: "timer", [`data-${kind}`]: iso, "data-label": label });
  drawTimer(node);
  return node;
}

// The escalator fires a due rung within a second or two; a timer this far past its time
// means no alert core is escalating (stopped, or cut off from the database).
export const OVERDUE_S = 15;
export const liveNow = () => document.getElementById("live")?.dataset.live === "on";
// The server reads the alert core's heartbeat: "down" means nothing escalates at all.
const coreDown = () => document.getElementById("live")?.dataset.service === "down";

function drawTimer(node) {
  if (node.dataset.from) {
    const s = (now() - Date.parse(node.dataset.from)) / 1000;
    node.textContent = t(node.dataset.label || "ago", { t: span(s) });
  } else if (node.dataset.to) {
    // A countdown is shown only while it means something: not while this page is cut off
    // from the server, nor with no alert core running, nor once the rung is overdue
    // (nothing escalates: say so).
    const left = (Date.parse(node.dataset.to) - now()) / 1000;
    const state = !liveNow() ? "unknown" : coreDown() ? "nocore"
      : left < -OVERDUE_S ? "overdue" : "running";
    node.dataset.countdown = state;
    node.textContent = state === "unknown" ? t("no_timer") : state === "nocore" ? t("no_core")
      : state === "overdue" ? t("overdue", { t: span(-left) })
        : t("next_rung", { t: span(left) });
  }
}

export const redrawTimers = () => document.querySelectorAll(".timer").forEach(drawTimer);

setInterval(redrawTimers, 1000);
