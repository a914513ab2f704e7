// Steering an incident and keeping the roster covered (issue 16), through the ordinary API:
//
//   the incident's detail, for the people on the ladder (roles that may act):
//     立即升级 escalate now     POST /v1/incidents/{id}/escalate  {"to": null|"community"|"street"}
//     加派/转派 add / reassign  POST /v1/incidents/{id}/responders {"worker_id", "reassign"}
//   the 值班安排 duty screen, for officers and grid leaders (roster:change):
//     the coming 7 days' shifts of their area   GET /v1/roster, GET /v1/workers (people:read)
//     leave with an optional substitute         POST /v1/leave (answers coverage warnings)
//     cancel a leave                            GET /v1/leave, POST /v1/leave/{id}/cancel
//     swap two shifts                           POST /v1/roster/swap {"shift_ids": [a, b]}
//
// Results and refusals read Chinese first, English second. The API decides who may do what
// and in which area; this screen offers what it allows and shows what it answers.

import { lang, t, TEXT } from "./i18n.js";
import { $, el, now } from "./ui.js";

Object.assign(TEXT.zh, {
  view_duty: "值班安排", steer: "升级/派人…",
  escalate_title: "立即升级", escalate_to: "升级到", to_next: "下一级", to_community: "社区",
  to_street: "街道", why_note: "原因（可不填）", escalate_submit: "立即升级",
  escalate_hint: "不等升级倒计时：立即通知下一级或所选级别的在岗人员，并记入处置记录。",
  escalated: "已立即升级，{to}正在通知 · Escalated now: paging {to_en}",
  responder_title: "加派 / 转派", responder_id: "人员（选择或输入编号）",
  reassign: "转派：交给此人，在其接警前警情重新等待接警",
  responder_submit: "加派 / 转派",
  added: "已加派 {who}，已通知 · {who} added and paged",
  reassigned: "已转派给 {who}，已通知，等待其接警 · Reassigned to {who}: paged, waiting for them",
  e_no_rung: "没有更高一级可以升级", e_worker: "人员不存在、已停用或不在您的辖区",
  e_shift: "班次不存在或不在您的辖区", e_swap: "无法换班",
  roster_title: "未来 7 天排班", swap: "换班（选中两个班次）",
  swap_hint: "选中两位同岗人员的班次后按“换班”。请假人员的班次标有“请假”。",
  swapped: "已换班 · Shifts swapped", on_leave: "请假", sub_by: "替班：{who}",
  no_shifts: "未来 7 天没有排班",
  no_people_read: "您的角色不能查看人员和排班（people:read）；请假时请直接输入人员编号。",
  leave_title: "请假 / 替班", leave_worker: "请假人员（选择或输入编号）", leave_from: "开始",
  leave_to: "结束", leave_sub: "替班人员（可不填）", leave_reason: "事由（可不填）",
  leave_submit: "登记请假",
  leave_saved: "已登记请假（编号 {id}）· Leave saved (id {id})",
  leave_gaps: "注意：以下时段无人覆盖 · Coverage gaps:",
  leave_bad_time: "结束时间须晚于开始时间 · the end must be after the start",
  leaves_title: "请假记录（未来 7 天）", no_leaves: "没有请假",
  cancel_leave: "取消请假", cancelled: "已取消",
  leave_cancelled: "已取消请假 · Leave cancelled",
});

Object.assign(TEXT.en, {
  view_duty: "Duty", steer: "Escalate / assign…",
  escalate_title: "Escalate now", escalate_to: "Escalate to", to_next: "The next rung",
  to_community: "Community", to_street: "Street", why_note: "Why (optional)",
  escalate_submit: "Escalate now",
  escalate_hint: "Without waiting for the countdown: the people on duty at the next rung, or "
    + "at the level chosen, are paged at once; the log says who did it.",
  escalated: "Escalated now: paging {to_en}",
  responder_title: "Add / reassign", responder_id: "Person (pick or type an id)",
  reassign: "Reassign: hand it to this person; it waits for their acknowledgement",
  responder_submit: "Add / reassign",
  added: "{who} added and paged",
  reassigned: "Reassigned to {who}: paged, waiting for them",
  e_no_rung: "no higher rung to escalate to", e_worker: "no such active worker in your area",
  e_shift: "no such shift in your area", e_swap: "cannot swap",
  roster_title: "Shifts, the coming 7 days", swap: "Swap (pick two shifts)",
  swap_hint: "Pick two shifts of people of the same role, then Swap. Shifts of people on "
    + "leave are marked.",
  swapped: "Shifts swapped", on_leave: "on leave", sub_by: "substitute: {who}",
  no_shifts: "No shifts in the coming 7 days",
  no_people_read: "Your role cannot read people and shifts (people:read): type the worker's "
    + "id for leave.",
  leave_title: "Leave / substitute", leave_worker: "On leave (pick or type an id)",
  leave_from: "From", leave_to: "Until", leave_sub: "Substitute (optional)",
  leave_reason: "Reason (optional)", leave_submit: "Save leave",
  leave_saved: "Leave saved (id {id})", leave_gaps: "Coverage gaps:",
  leave_bad_time: "the end must be after the start",
  leaves_title: "Leave, the coming 7 days", no_leaves: "No leave",
  cancel_leave: "Cancel leave", cancelled: "cancelled", leave_cancelled: "Leave cancelled",
});

const CHANGERS = new Set(["admin", "street_duty", "community_duty", "grid_leader"]);
const WEEK_MS = 7 * 24 * 3600 * 1000;
const TO_EN = { "": "the next rung", community: "the community level",
                street: "the street level" };
const TO_ZH = { "": "下一级", community: "社区一级", street: "街道一级" };

let api = null;          // console.js's fetch wrapper
let refusal = null;      // console.js's words for the API's refusals
let applied = null;      // console.js: an incident as an action answered it
let me = null;
const duty = {
  workers: undefined,    // id -> worker of the caller's area; null: the role cannot read
                         // them; undefined: not read yet
  shifts: [],
  leaves: [],
};
let steered = null;      // the incident the steering forms were last filled for
let onDuty = [];         // its people on duty for the building (the detail's people read)

export const allowed = (role) => CHANGERS.has(role);

export function init(deps) {
  ({ api, refusal, applied } = deps);
}

// Logged out: nothing of the last person's area stays for the next one.
export function reset() {
  me = null;
  steered = null;
  onDuty = [];
  Object.assign(duty, { workers: undefined, shifts: [], leaves: [] });
  $("duty").dataset.loaded = "false";
}

// --- words -------------------------------------------------------------------------------

// The API's refusal, Chinese first: what this screen knows better than the generic words.
function refused(e, kind = null) {
  const msg = e.message || "";
  const key = /no later rung/.test(msg) ? "e_no_rung"
    : kind === "worker" && /worker/.test(msg) && (e.status === 404 || e.status === 422)
      ? "e_worker"
      : kind === "shift" && /shift|worker/.test(msg) && e.status === 404 ? "e_shift"
        : kind === "shift" && (e.status === 409 || e.status === 422) ? "e_swap" : null;
  if (!key) return refusal(e);
  return t("failed", { msg: lang === "zh" ? `${t(key)}（${msg}）` : msg });
}

function say(id, text, ok) {
  const line = $(id);
  line.textContent = text;
  line.dataset.ok = String(ok);
}

const name = (id) => duty.workers?.get(id)?.name ?? id;

function when(iso) {
  return new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", {
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
}

// datetime-local holds local time without a zone: the browser's Date reads it as local.
const localValue = (ms) => {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
};

// --- the workers of the caller's area ------------------------------------------------------

async function pages(path) {
  const found = [];
  const sep = path.includes("?") ? "&" : "?";
  for (let offset = 0; offset !== null;) {
    const page = await api(`${path}${sep}limit=1000&offset=${offset}`);
    found.push(...page.items);
    offset = page.next_offset;
  }
  return found;
}

async function areaIds() {
  // A worker covers one grid, community or street (worker_areas): an officer's area is their
  // own ids and every community and grid below them.
  const ids = new Set(me.areas.map((a) => a.id));
  const streets = me.areas.filter((a) => a.level === "street").map((a) => a.id);
  const communities = me.areas.filter((a) => a.level === "community").map((a) => a.id);
  for (const s of streets) {
    for (const c of await pages(`/v1/communities?street_id=${encodeURIComponent(s)}`)) {
      ids.add(c.id);
      communities.push(c.id);
    }
  }
  for (const c of communities) {
    for (const g of await pages(`/v1/grids?community_id=${encodeURIComponent(c)}`)) ids.add(g.id);
  }
  return ids;
}

async function readWorkers() {
  // Officers read people (people:read); grid leaders and workers do not: they type ids.
  try {
    let list;
    if (!me.areas.length) {
      list = await pages("/v1/workers?active=true");            // an admin: everyone
    } else {
      const byId = new Map();
      for (const id of await areaIds()) {
        for (const w of await pages(`/v1/workers?active=true&area=${encodeURIComponent(id)}`)) {
          byId.set(w.id, w);
        }
      }
      list = [...byId.values()];
    }
    duty.workers = new Map(list.sort((a, b) => a.id.localeCompare(b.id)).map((w) => [w.id, w]));
  } catch (e) {
    if (e.status !== 403) throw e;
    duty.workers = null;
  }
}

const workerOptions = (workers) => workers.map((w) => el("option", {
  value: w.id, label: `${w.name} · ${t(w.role)}`, text: `${w.name} · ${t(w.role)}` }));

// --- the incident: escalate now, add or reassign -------------------------------------------

export function renderSteer(i, people, who) {
  me = who;
  const open = Boolean(who?.can_act) && i.state !== "resolved";
  $("escalate-form").hidden = !open;
  $("responder-form").hidden = !open;
  if (steered !== i.id) {
    steered = i.id;
    $("escalate-to").value = "";
    for (const id of ["escalate-note", "responder-id", "responder-note"]) $(id).value = "";
    $("responder-reassign").checked = false;
    for (const id of ["escalate-result", "responder-result"]) say(id, "", true);
    if (open && duty.workers === undefined) readWorkers().then(fillChoices).catch(() => {});
  }
  onDuty = people?.on_duty ?? [];
  if (open) fillChoices();
}

function fillChoices() {
  // Whom to add: the people on duty for the building, and the officer's own area.
  const choices = new Map();
  for (const p of onDuty) choices.set(p.worker_id, p);
  for (const w of duty.workers?.values() ?? []) if (!choices.has(w.id)) choices.set(w.id, w);
  $("responder-options").replaceChildren(...workerOptions([...choices.entries()].map(
    ([id, p]) => ({ id, name: p.name, role: p.role }))));
}

async function post(ev, line, path, body, kind) {
  ev.preventDefault();
  const button = ev.target.querySelector("button[type=submit]");
  button.disabled = true;
  say(line, "", true);
  try {
    return await api(path, { method: "POST", body });
  } catch (e) {
    say(line, refused(e, kind), false);
    return null;
  } finally {
    button.disabled = false;
  }
}

$("escalate-form").addEventListener("submit", async (ev) => {
  const id = steered;
  const to = $("escalate-to").value;
  const note = $("escalate-note").value.trim();
  const done = await post(ev, "escalate-result", `/v1/incidents/${id}/escalate`,
                          { to: to || null, ...(note ? { note } : {}) }, "rung");
  if (!done) return;
  applied(done);
  say("escalate-result", t("escalated", { to: TO_ZH[to], to_en: TO_EN[to] }), true);
  $("escalate-note").value = "";
});

$("responder-form").addEventListener("submit", async (ev) => {
  const id = steered;
  const worker = $("responder-id").value.trim();
  const reassign = $("responder-reassign").checked;
  const note = $("responder-note").value.trim();
  const done = await post(ev, "responder-result", `/v1/incidents/${id}/responders`,
                          { worker_id: worker, reassign, ...(note ? { note } : {}) }, "worker");
  if (!done) return;
  applied(done);
  say("responder-result", t(reassign ? "reassigned" : "added", { who: name(worker) }), true);
  $("responder-note").value = "";
});

// --- the duty screen ---------------------------------------------------------------------

export async function open(who) {
  me = who;
  for (const id of ["leave-error", "swap-result"]) say(id, "", true);
  $("leave-warnings").replaceChildren();
  if (!$("leave-from").value) {
    const hour = Math.ceil(now() / 3600000) * 3600000;
    $("leave-from").value = localValue(hour);
    $("leave-to").value = localValue(hour + 24 * 3600000);
  }
  await reload();
}

async function reload() {
  const from = new Date(now()).toISOString();
  const to = new Date(now() + WEEK_MS).toISOString();
  const range = `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  try {
    await readWorkers();
    const [shifts, leaves] = await Promise.all([
      duty.workers ? api(`/v1/roster?${range}`) : [],
      api(`/v1/leave?${range}`)]);
    const mine = (id) => !duty.workers || duty.workers.has(id);
    duty.shifts = shifts.filter((s) => mine(s.worker_id));
    duty.leaves = leaves.filter((l) => mine(l.worker_id) || mine(l.substitute_id));
    $("duty").dataset.loaded = "true";
  } catch (e) {
    say("swap-result", refused(e), false);
  }
  render();
}

function onLeave(shift) {
  return duty.leaves.find((l) => !l.cancelled_at && l.worker_id === shift.worker_id
    && Date.parse(l.starts_at) < Date.parse(shift.ends_at)
    && Date.parse(l.ends_at) > Date.parse(shift.starts_at));
}

export function render() {
  if (!me) return;
  $("duty-note").textContent = duty.workers === null ? t("no_people_read") : "";
  $("duty-workers").replaceChildren(...workerOptions([...(duty.workers?.values() ?? [])]));
  const picked = new Set([...document.querySelectorAll("#roster input:checked")]
    .map((b) => b.value));
  $("roster").replaceChildren(...(duty.shifts.length ? duty.shifts.map((s) => {
    const away = onLeave(s);
    const box = el("input", { type: "checkbox", value: String(s.id), id: `shift-${s.id}`,
                              checked: picked.has(String(s.id)), onchange: pickedChanged });
    return el("li", { "data-shift": s.id, "data-worker": s.worker_id,
                      "data-leave": away ? away.id : null },
      box, el("label", { for: `shift-${s.id}`, class: "shift" },
        `${when(s.starts_at)} – ${when(s.ends_at)} · `, el("b", { text: s.name }),
        ` · ${t(s.role)}`,
        away ? el("span", { class: "away", text: ` · ${t("on_leave")}${away.substitute_id
          ? ` · ${t("sub_by", { who: name(away.substitute_id) })}` : ""}` }) : null));
  }) : [el("li", { class: "muted", text: t(duty.workers === null ? "no_people_read"
                                                                  : "no_shifts") })]));
  pickedChanged();
  $("leaves").replaceChildren(...(duty.leaves.length ? duty.leaves.map((l) => el("li", {
    "data-leave": l.id, "data-cancelled": String(Boolean(l.cancelled_at)) },
    `${when(l.starts_at)} – ${when(l.ends_at)} · `, el("b", { text: name(l.worker_id) }),
    l.substitute_id ? ` · ${t("sub_by", { who: name(l.substitute_id) })}` : "",
    l.reason ? ` · ${l.reason}` : "",
    l.cancelled_at ? el("span", { class: "muted", text: ` · ${t("cancelled")}` })
      : el("button", { type: "button", class: "link", "data-act": "cancel-leave",
                       text: t("cancel_leave"), onclick: (ev) => cancel(l.id, ev.target) })))
    : [el("li", { class: "muted", text: t("no_leaves") })]));
}

function pickedChanged() {
  $("swap").disabled = document.querySelectorAll("#roster input:checked").length !== 2;
}

$("swap").addEventListener("click", async () => {
  const ids = [...document.querySelectorAll("#roster input:checked")].map((b) => Number(b.value));
  $("swap").disabled = true;
  try {
    await api("/v1/roster/swap", { method: "POST", body: { shift_ids: ids } });
    document.querySelectorAll("#roster input:checked").forEach((b) => { b.checked = false; });
    await reload();
    say("swap-result", t("swapped"), true);
  } catch (e) {
    say("swap-result", refused(e, "shift"), false);
    pickedChanged();
  }
});

async function cancel(id, button) {
  button.disabled = true;
  try {
    await api(`/v1/leave/${id}/cancel`, { method: "POST" });
    await reload();
    say("swap-result", t("leave_cancelled"), true);
  } catch (e) {
    button.disabled = false;
    say("swap-result", refused(e), false);
  }
}

$("leave-form").addEventListener("submit", async (ev) => {
  const starts = Date.parse($("leave-from").value), ends = Date.parse($("leave-to").value);
  $("leave-warnings").replaceChildren();
  if (!(ends > starts)) { ev.preventDefault(); say("leave-error", t("leave_bad_time"), false); return; }
  const sub = $("leave-sub").value.trim();
  const reason = $("leave-reason").value.trim();
  const body = { worker_id: $("leave-worker").value.trim(),
                 starts_at: new Date(starts).toISOString(), ends_at: new Date(ends).toISOString(),
                 ...(sub ? { substitute_id: sub } : {}), ...(reason ? { reason } : {}) };
  const saved = await post(ev, "leave-error", "/v1/leave", body, "worker");
  if (!saved) return;
  say("leave-error", t("leave_saved", { id: saved.id }), true);
  $("leave-warnings").replaceChildren(...(saved.warnings.length
    ? [el("li", { class: "gaps", text: t("leave_gaps") }),
       ...saved.warnings.map((w) => el("li", { "data-warning": "gap", text: w }))] : []));
  for (const id of ["leave-worker", "leave-sub", "leave-reason"]) $(id).value = "";
  await reload();
});
