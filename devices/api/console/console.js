// firegrid duty console: the open incidents of your area, live, and the buttons of the
// closed loop. No framework and no build step; served by the API (docs/console.md).
//
// Data flow: GET /v1/incidents for the list, then GET /v1/incidents/events (server-sent
// events) for every change; "hello" and "resync" mean "read the list again". Actions are
// the ordinary POST /v1/incidents/{id}/... routes. The session cookie is HttpOnly: this
// script never sees a credential except the token typed once into the login form.

const HEADER = { "X-Firegrid-Console": "1" };
const OFFICERS = new Set(["community_duty", "street_duty", "admin"]);

const TEXT = {
  zh: {
    title: "消防网格值守台", connecting: "连接中", live_on: "实时", live_off: "重连中",
    logout: "退出登录", login_title: "登录", token_label: "登录令牌", login: "登录",
    token_hint: "输入管理员发给您的令牌（fg_ 开头），或直接打开管理员发来的登录链接。本机登录 7 天有效，退出或令牌作废后立即失效。",
    bad_token: "令牌无效或已作废，请联系管理员。", session_over: "登录已过期，请重新登录。",
    empty: "没有未处置的警情", back: "‹ 返回列表", resolve_title: "处置完毕", cause: "原因",
    note: "处置说明", resolve_submit: "提交处置结果", alerts: "报警", log: "处置记录",
    acknowledge: "确认接警", arrive: "已到场", resolve: "处置…",
    opened: "发生", ack: "确认", arrive_t: "到场", escalation: "升级",
    who_has: "负责人", next_rung: "{t} 后升级", exhausted: "已升级到最高级，无人确认",
    stopped: "已停止升级", not_yet: "未开始", ago: "{t} 前", waiting: "等待 {t}",
    rung: "第 {n} 级：{roles}", none_paged: "尚未通知任何人",
    open_n: "未处置", unacked_n: "未确认", escalated_n: "已升级", confirmed_n: "确认火警",
    alerts_n: "{n} 次报警", floor: "{n} 层", you: "{name}（{role}）· {areas}",
    all_areas: "全部区域", failed: "操作失败：{msg}", note_needed: "请填写处置说明",
    sev_warning: "火警预警", sev_confirmed: "确认火警",
    st_raised: "新警情", st_notified: "已通知", st_acknowledged: "已确认", st_on_site: "已到场",
    st_resolved: "已处置",
    real_fire: "真实火情", cooking_steam: "烹饪油烟 / 水汽", dust_insects: "灰尘 / 虫子",
    device_fault: "设备故障", test_drill: "测试 / 演练",
    grid_worker: "网格员", grid_leader: "网格长", community_duty: "社区值班",
    street_duty: "街道值班", field_technician: "维保人员", admin: "管理员",
    grid: "网格", community: "社区", street: "街道",
    a_raised: "报警立案", a_confirmed: "火警确认", a_notified: "已通知", a_skipped: "跳过（无人在岗）",
    a_exhausted: "升级到底", a_forwarded: "已转 119", a_acknowledged: "确认接警",
    a_on_site: "到场", a_resolved: "处置完毕", a_reopened: "重新打开",
  },
  en: {
    title: "firegrid duty console", connecting: "connecting", live_on: "live",
    live_off: "reconnecting", logout: "Log out", login_title: "Log in", token_label: "Login token",
    login: "Log in",
    token_hint: "Enter the token your admin gave you (it starts with fg_), or open the login link they sent. You stay logged in on this device for 7 days; logging out or revoking the token ends it at once.",
    bad_token: "Unknown or revoked token: ask your admin.", session_over: "Your session has ended: log in again.",
    empty: "No open incidents", back: "‹ Back to the list", resolve_title: "Resolve",
    cause: "Cause", note: "What was found and done", resolve_submit: "Resolve the incident",
    alerts: "Alerts", log: "Log", acknowledge: "Acknowledge", arrive: "On site",
    resolve: "Resolve…", opened: "Raised", ack: "Acknowledged", arrive_t: "On site",
    escalation: "Escalation", who_has: "Who has it", next_rung: "next rung in {t}",
    exhausted: "ladder exhausted, nobody acknowledged", stopped: "stopped",
    not_yet: "not started", ago: "{t} ago", waiting: "waiting {t}", rung: "rung {n}: {roles}",
    none_paged: "nobody paged yet", open_n: "open", unacked_n: "unacknowledged",
    escalated_n: "escalated", confirmed_n: "confirmed fires", alerts_n: "{n} alert(s)",
    floor: "floor {n}", you: "{name} ({role}) · {areas}", all_areas: "all areas",
    failed: "Failed: {msg}", note_needed: "Write what was found and done",
    sev_warning: "Fire warning", sev_confirmed: "Confirmed fire",
    st_raised: "raised", st_notified: "notified", st_acknowledged: "acknowledged",
    st_on_site: "on site", st_resolved: "resolved",
    real_fire: "Real fire", cooking_steam: "Cooking smoke / steam", dust_insects: "Dust / insects",
    device_fault: "Device fault", test_drill: "Test / drill",
    grid_worker: "grid worker", grid_leader: "grid leader", community_duty: "community duty",
    street_duty: "street duty", field_technician: "field technician", admin: "admin",
    grid: "grid", community: "community", street: "street",
    a_raised: "raised", a_confirmed: "confirmed", a_notified: "paged", a_skipped: "skipped (nobody on duty)",
    a_exhausted: "ladder exhausted", a_forwarded: "forwarded to 119", a_acknowledged: "acknowledged",
    a_on_site: "on site", a_resolved: "resolved", a_reopened: "reopened",
  },
};

const state = {
  lang: localStorage.getItem("fg-lang") === "en" ? "en" : "zh",
  me: null,
  skew: 0,                 // server clock minus ours, ms
  incidents: new Map(),    // id -> summary (open ones)
  loading: null,           // a list read in flight; events wait in `held`
  held: [],
  source: null,
  detail: null,            // the incident shown in the detail view
};

const $ = (id) => document.getElementById(id);

function t(key, vars = {}) {
  const s = TEXT[state.lang][key] ?? TEXT.zh[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

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
  const r = await fetch(path, init);
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

const now = () => Date.now() + state.skew;
const setSkew = (iso) => { state.skew = Date.parse(iso) - Date.now(); };

// --- time -------------------------------------------------------------------------------

function span(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(s).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

const clock = (iso) => new Date(iso).toLocaleTimeString(state.lang === "zh" ? "zh-CN" : "en-GB",
  { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// A timer element: counts up from data-from, or down to data-to, redrawn every second.
function timer(kind, iso, label = null) {
  const node = el("span", { class: "timer", [`data-${kind}`]: iso, "data-label": label });
  drawTimer(node);
  return node;
}

function drawTimer(node) {
  if (node.dataset.from) {
    const s = (now() - Date.parse(node.dataset.from)) / 1000;
    node.textContent = t(node.dataset.label || "ago", { t: span(s) });
  } else if (node.dataset.to) {
    node.textContent = t("next_rung", { t: span((Date.parse(node.dataset.to) - now()) / 1000) });
  }
}

setInterval(() => document.querySelectorAll(".timer").forEach(drawTimer), 1000);

// --- rendering --------------------------------------------------------------------------

const late = (i) => i.escalation.exhausted || (i.escalation.last_notified_rung ?? 0) > 0;
const waitingAck = (i) => i.state === "raised" || i.state === "notified";
const person = (actor) => (actor || "").replace(/^(api|cli):/, "");

function stepTimer(i, took) {
  // Done: how long it took from the alarm. Not yet: how long it has been waiting.
  if (took !== null && took !== undefined) return el("span", { text: span(took) });
  if (i.state === "resolved") return el("span", { text: "—" });
  const node = timer("from", i.opened_at, "waiting");
  node.classList.add("running");
  return node;
}

function escalationText(i) {
  const e = i.escalation;
  const parts = [];
  if (e.last_notified_rung !== null && e.last_notified_rung !== undefined) {
    parts.push(t("rung", { n: e.last_notified_rung + 1,
                           roles: e.roles.map((r) => t(r)).join("、") }));
  } else {
    parts.push(t("none_paged"));
  }
  const node = el("span", {}, parts.join(" "), " · ");
  if (e.exhausted) node.append(el("b", { text: t("exhausted") }));
  else if (e.escalate_at) node.append(timer("to", e.escalate_at));
  else node.append(t(waitingAck(i) ? "not_yet" : "stopped"));
  return node;
}

function badges(i) {
  return el("div", { class: "badges" },
    el("span", { class: `badge sev-${i.severity}`, text: t(`sev_${i.severity}`) }),
    el("span", { class: `badge state st-${i.state}`, text: t(`st_${i.state}`) }),
    late(i) ? el("span", { class: "badge late", text: t("escalated_n") }) : null);
}

function actions(i, { inDetail = false } = {}) {
  if (!state.me?.can_act || i.state === "resolved") return null;
  const box = el("div", { class: "actions" });
  const act = (name, label) => el("button", { type: "button", "data-act": name, text: t(label),
                                              onclick: (ev) => { ev.stopPropagation();
                                                                 perform(i.id, name, ev.target); } });
  if (waitingAck(i)) box.append(act("acknowledge", "acknowledge"));
  if (i.state !== "on_site") box.append(act("arrive", "arrive"));
  if (!inDetail) box.append(act("resolve", "resolve"));
  return box;
}

function card(i, opts = {}) {
  const officer = document.body.classList.contains("officer");
  const place = [i.building_id, i.grid_name, officer ? i.community_name : null]
    .filter(Boolean).join(" · ");
  return el("article", { class: "card", "data-incident": i.id, "data-state": i.state,
                         "data-severity": i.severity },
    badges(i),
    el("div", { class: opts.inDetail ? "" : "open",
                onclick: opts.inDetail ? null : () => openDetail(i.id) },
      el("h2", { text: i.address }),
      el("p", { class: "place", text: `${place} · ${t("alerts_n", { n: i.alert_count })}` }),
      el("dl", { class: "facts" },
        el("dt", { text: t("opened") }), el("dd", {}, clock(i.opened_at), " · ",
                                             timer("from", i.opened_at)),
        el("dt", { text: t("ack") }), el("dd", { class: "t-ack" },
                                          stepTimer(i, i.ack_s)),
        el("dt", { text: t("arrive_t") }), el("dd", { class: "t-arrive" },
                                               stepTimer(i, i.arrive_s)),
        el("dt", { text: t("escalation") }), el("dd", { class: "escalation" }, escalationText(i)),
        i.acknowledged_by ? el("dt", { text: t("who_has") }) : null,
        i.acknowledged_by ? el("dd", { class: "who-has", text: person(i.on_site_by || i.acknowledged_by) }) : null)),
    actions(i, opts));
}

function sorted() {
  // What needs someone first: unacknowledged, then the most escalated, then the newest.
  return [...state.incidents.values()].sort((a, b) =>
    (waitingAck(b) - waitingAck(a)) || (late(b) - late(a)) ||
    (Date.parse(b.opened_at) - Date.parse(a.opened_at)) || (b.id - a.id));
}

function renderList() {
  const list = sorted();
  $("incidents").replaceChildren(...list.map((i) => el("li", {}, card(i))));
  $("empty").hidden = list.length > 0;
  const summary = $("summary");
  summary.hidden = !document.body.classList.contains("officer");
  const count = (f) => list.filter(f).length;
  const cell = (n, key, hot) => el("div", { class: hot && n ? "hot" : "", "data-count": key },
                                   el("b", { text: String(n) }), el("span", { text: t(key) }));
  summary.replaceChildren(cell(list.length, "open_n"), cell(count(waitingAck), "unacked_n", true),
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
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = state.lang === "zh" ? "消防网格值守台 · firegrid" : "firegrid duty console";
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  $("lang").textContent = state.lang === "zh" ? "English" : "中文";
  $("lang").lang = state.lang === "zh" ? "en" : "zh-CN";
  setLive($("live").dataset.live);
  const cause = $("cause");
  const chosen = cause.value;
  cause.replaceChildren(el("option", { value: "", text: "—" }),
    ...(state.me?.causes || []).map((c) => el("option", { value: c, text: t(c) })));
  cause.value = chosen;
}

function render() {
  renderStatic();
  if (state.me) { renderWho(); renderList(); }
  if (state.detail) renderDetail();
}

function setLive(mode) {
  const live = $("live");
  live.dataset.live = mode;
  live.textContent = t(mode === "on" ? "live_on" : mode === "off" ? "live_off" : "connecting");
}

// --- screens ----------------------------------------------------------------------------

function show(screen) {
  for (const id of ["login", "board", "detail"]) $(id).hidden = id !== screen;
  $("logout").hidden = screen === "login";
  $("live").hidden = screen === "login";
  window.scrollTo(0, 0);
}

function showLogin(message = "") {
  stopEvents();
  state.me = null;
  state.detail = null;
  state.incidents.clear();
  $("login-error").textContent = message;
  show("login");
}

async function start(me) {
  state.me = me;
  setSkew(me.now);
  document.body.classList.toggle("officer", OFFICERS.has(me.role));
  render();
  show("board");
  startEvents();
}

async function readList() {
  // Events that arrive while the list is read are applied after it, so an older list never
  // overwrites a newer event.
  const run = (async () => {
    const page = await api("/v1/incidents?state=open&limit=1000");
    state.incidents = new Map(page.items.map((i) => [i.id, i]));
    const held = state.held;
    state.held = [];
    held.forEach(apply);
  })();
  state.loading = run;
  try { await run; } finally { if (state.loading === run) state.loading = null; }
  renderList();
  if (state.detail) refreshDetail();
}

function apply(i) {
  if (i.state === "resolved") state.incidents.delete(i.id);
  else state.incidents.set(i.id, i);
}

function onIncident(i) {
  if (state.loading) { state.held.push(i); return; }
  apply(i);
  renderList();
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
    setLive(hello.live ? "on" : "off");
    readList().catch(() => {});
  });
  source.addEventListener("resync", () => readList().catch(() => {}));
  source.addEventListener("status", (ev) => setLive(JSON.parse(ev.data).live ? "on" : "off"));
  source.addEventListener("incident", (ev) => onIncident(JSON.parse(ev.data)));
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

// --- actions ----------------------------------------------------------------------------

async function perform(id, act, button) {
  if (act === "resolve") { openDetail(id, { resolve: true }); return; }
  button.disabled = true;
  try {
    const done = await api(`/v1/incidents/${id}/${act}`, { method: "POST", body: {} });
    onIncident(done);
    if (state.detail?.id === id) { state.detail = done; renderDetail(); }
  } catch (e) {
    alert(t("failed", { msg: e.message }));
  } finally {
    button.disabled = false;
  }
}

async function openDetail(id, { resolve = false } = {}) {
  try {
    state.detail = await api(`/v1/incidents/${id}`);
  } catch { return; }
  $("resolve-error").textContent = "";
  $("note").value = "";
  $("cause").value = "";
  renderDetail();
  show("detail");
  if (resolve) $("cause").focus();
}

async function refreshDetail() {
  const id = state.detail?.id;
  try {
    const fresh = await api(`/v1/incidents/${id}`);
    if (state.detail?.id === id) { state.detail = fresh; renderDetail(); }
  } catch (e) {
    if (e.status === 404 && state.detail?.id === id) closeDetail();
  }
}

function closeDetail() {
  state.detail = null;
  show("board");
  renderList();
}

function renderDetail() {
  const i = state.detail;
  $("detail-card").replaceChildren(card(i, { inDetail: true }));
  $("resolve-form").hidden = !state.me?.can_act || i.state === "resolved";
  $("alerts").replaceChildren(...i.alerts.map((a) => el("li", {},
    el("time", { text: clock(a.received_at) }),
    [a.device_id, a.floor !== null ? t("floor", { n: a.floor }) : null, a.location, a.rule,
     a.muted ? "(muted)" : null].filter(Boolean).join(" · "))));
  $("log").replaceChildren(...i.log.map((l) => el("li", {},
    el("time", { text: clock(l.at) }),
    `${t(`a_${l.action}`)} · ${person(l.actor)}`, l.detail?.note ? ` · ${l.detail.note}` : "")));
}

// --- wiring -----------------------------------------------------------------------------

async function login(token) {
  $("login-error").textContent = "";
  try {
    const me = await api("/v1/console/login", { method: "POST", body: { token } });
    $("token").value = "";
    await start(me);
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? t("bad_token") : e.message;
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  login($("token").value.trim());
});

$("resolve-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const i = state.detail;
  const note = $("note").value.trim();
  if (!note) { $("resolve-error").textContent = t("note_needed"); return; }
  const button = ev.submitter || $("resolve-form").querySelector("button");
  button.disabled = true;
  try {
    const done = await api(`/v1/incidents/${i.id}/resolve`, { method: "POST",
                                                           body: { cause: $("cause").value, note } });
    onIncident(done);
    closeDetail();
  } catch (e) {
    $("resolve-error").textContent = t("failed", { msg: e.message });
  } finally {
    button.disabled = false;
  }
});

$("back").addEventListener("click", closeDetail);

$("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("fg-lang", state.lang);
  render();
});

$("logout").addEventListener("click", async () => {
  await api("/v1/console/logout", { method: "POST" }).catch(() => {});
  showLogin();
});

async function boot() {
  renderStatic();
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
  } catch {
    showLogin();
  }
}

boot();
