// One incident as a card: on the board (tap to open it) and at the top of its detail view.
// An open incident's card is about time (how long it has waited, when the next rung pages
// someone higher up); a resolved one's is the closed loop's feedback (cause, who, note).

import { both, t } from "./i18n.js";
import { clock, el, span, timer } from "./ui.js";

export const late = (i) => i.escalation.exhausted || (i.escalation.last_notified_rung ?? 0) > 0;
export const waitingAck = (i) => i.state === "raised" || i.state === "notified";

// What must be acted on first (the same order on the phone and the officer's board):
//   0 confirmed fires: nobody has taken them first, then the highest rung, then the oldest;
//   1 fire warnings nobody has acknowledged yet: the highest rung, then the oldest (it has
//     waited longest; the ladder climbs it next);
//   2 the rest (warnings someone has, other hazards, alarms that paged nobody in a
//     silence): the oldest first.
export function rank(i) {
  if (i.hazard === "fire" && i.severity === "confirmed") return 0;
  if (i.hazard === "fire" && waitingAck(i) && !i.muted) return 1;
  return 2;
}

const level = (i) => (i.escalation.exhausted ? 1000 : i.escalation.last_notified_rung ?? -1);

export function worstFirst(a, b) {
  return (rank(a) - rank(b)) || (waitingAck(b) - waitingAck(a)) || (level(b) - level(a)) ||
    (Date.parse(a.opened_at) - Date.parse(b.opened_at)) || (a.id - b.id);
}

// The log and the incident say "api:gw1-phone": the token's name, until the console has
// learnt whose token it is (GET /v1/console/incidents/{id}/people; console.js keeps them).
export const person = (actor) => (actor || "").replace(/^(api|cli|voice|sms):/, "");

// A phone number as a tel: link (a tap calls); the card's own tap must not open it too.
export const telLink = (phone, label = phone) => el("a", {
  class: "tel", href: `tel:${phone.replace(/[^+0-9]/g, "")}`, text: label,
  onclick: (ev) => ev.stopPropagation() });

// Someone who acted: their name and a call link once known, else the token's name.
function actorOf(actor, who) {
  const p = who?.(actor);
  if (!p) return person(actor);
  return [p.name, p.phone ? [" ", telLink(p.phone, `${t("call")} ${p.phone}`)] : null];
}

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
    i.state !== "resolved" && late(i) ? el("span", { class: "badge late", text: t("escalated_n") })
                                      : null);
}

function actions(i, { inDetail, canAct, onAct }) {
  if (!canAct || i.state === "resolved") return null;
  const box = el("div", { class: "actions" });
  const act = (name, label) => el("button", { type: "button", "data-act": name, text: t(label),
                                              onclick: (ev) => { ev.stopPropagation();
                                                                 onAct(i.id, name, ev.target); } });
  if (waitingAck(i)) box.append(act("acknowledge", "acknowledge"));
  if (i.state !== "on_site") box.append(act("arrive", "arrive"));
  // 人工确认: a person who sees the fire makes it one (every level paged, 119).
  if (!inDetail && i.severity === "warning") box.append(act("confirm", "confirm"));
  // 立即升级 / 加派: opens the incident at its escalate and add-responder forms (duty.js).
  if (!inDetail) box.append(act("steer", "steer"));
  if (!inDetail) box.append(act("resolve", "resolve"));
  return box;
}

const fact = (label, dd) => [el("dt", { text: t(label) }), dd];

function openFacts(i, who) {
  return [
    fact("opened", el("dd", {}, clock(i.opened_at), " · ", timer("from", i.opened_at))),
    fact("ack", el("dd", { class: "t-ack" }, stepTimer(i, i.ack_s))),
    fact("arrive_t", el("dd", { class: "t-arrive" }, stepTimer(i, i.arrive_s))),
    fact("escalation", el("dd", { class: "escalation" }, escalationText(i))),
    i.acknowledged_by ? fact("who_has", el("dd", { class: "who-has" },
                                           actorOf(i.on_site_by || i.acknowledged_by, who)))
                      : null,
  ];
}

function resolvedFacts(i, inDetail, who) {
  // The list answers "what was it and who closed it"; the detail adds how fast and the note.
  return [
    fact("opened", el("dd", { text: clock(i.opened_at) })),
    inDetail ? fact("ack", el("dd", { class: "t-ack" }, stepTimer(i, i.ack_s))) : null,
    inDetail ? fact("arrive_t", el("dd", { class: "t-arrive" }, stepTimer(i, i.arrive_s))) : null,
    fact("resolved_at", el("dd", { class: "resolved-at" }, clock(i.resolved_at), " · ",
                           timer("from", i.resolved_at))),
    fact("cause", el("dd", { class: "cause", text: i.cause ? both(i.cause) : "—" })),
    fact("resolved_by", el("dd", { class: "resolved-by" },
                           i.resolved_by ? actorOf(i.resolved_by, who) : "—")),
    inDetail ? fact("note_t", el("dd", { class: "note", text: i.note || "—" })) : null,
  ];
}

// opts: inDetail (no "open" tap target, no resolve button: the form is below), officer
// (show the community too), canAct (the role may act), onOpen(id), onAct(id, act, button),
// who(actor): the person behind a token ({name, phone}) when known.
export function card(i, { inDetail = false, officer = false, canAct = false, onOpen, onAct,
                          who } = {}) {
  const place = [i.building_id, i.grid_name, officer ? i.community_name : null]
    .filter(Boolean).join(" · ");
  const resolved = i.state === "resolved";
  return el("article", { class: "card", "data-incident": i.id, "data-state": i.state,
                         "data-severity": i.severity, "data-cause": i.cause },
    badges(i),
    el("div", { class: inDetail ? "" : "open", onclick: inDetail ? null : () => onOpen(i.id) },
      el("h2", { text: i.address }),
      el("p", { class: "place", text: `${place} · ${t("alerts_n", { n: i.alert_count })}` }),
      el("dl", { class: "facts" }, resolved ? resolvedFacts(i, inDetail, who) : openFacts(i, who))),
    actions(i, { inDetail, canAct, onAct }));
}
