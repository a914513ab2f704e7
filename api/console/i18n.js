// The console's words: Simplified Chinese first, English second. Every key exists in zh;
// an English one that is missing falls back to Chinese rather than to nothing.

export const TEXT = {
  zh: {
    title: "消防网格值守台", connecting: "连接中", live_on: "实时", live_off: "重连中",
    logout: "退出登录", login_title: "登录", token_label: "登录令牌", login: "登录",
    token_hint: "输入管理员发给您的令牌（fg_ 开头），或直接打开管理员发来的登录链接。本机登录 7 天有效，退出或令牌作废后立即失效。",
    bad_token: "令牌无效或已作废，请联系管理员。", session_over: "登录已过期，请重新登录。",
    empty: "没有未处置的警情", back: "‹ 返回列表", resolve_title: "处置完毕", cause: "原因",
    note: "处置说明", resolve_submit: "提交处置结果", alerts: "报警", log: "处置记录",
    acknowledge: "接警", arrive: "已到场", resolve: "处置…",
    opened: "发生", ack: "接警", arrive_t: "到场", escalation: "升级",
    who_has: "负责人", next_rung: "{t} 后升级", exhausted: "已升级到最高级，无人接警",
    stopped: "已停止升级", not_yet: "未开始", ago: "{t} 前", waiting: "等待 {t}",
    rung: "第 {n} 级：{roles}", none_paged: "尚未通知任何人",
    open_n: "未处置", unacked_n: "未接警", escalated_n: "已升级", confirmed_n: "确认火警",
    alerts_n: "{n} 次报警", floor: "{n} 层", you: "{name}（{role}）· {areas}",
    all_areas: "全部区域", failed: "操作失败：{msg}", note_needed: "请填写处置说明",
    view_open: "未处置", view_resolved: "近24小时已处置", loading: "加载中…",
    empty_resolved: "近 24 小时没有已处置的警情",
    resolved_at: "处置", resolved_by: "处置人", note_t: "处置说明",
    reopen_title: "重新打开", reopen_note: "重新打开的原因", reopen_submit: "重新打开警情",
    reopen_hint: "误处置时使用。重新打开后立即重新通知并开始升级。",
    reopen_needed: "请填写重新打开的原因",
    sev_warning: "火警预警", sev_confirmed: "确认火警",
    st_raised: "新警情", st_notified: "已通知", st_acknowledged: "已接警", st_on_site: "已到场",
    st_resolved: "已处置",
    real_fire: "真实火情", cooking_steam: "烹饪油烟 / 水汽", dust_insects: "灰尘 / 虫子",
    device_fault: "设备故障", test_drill: "测试 / 演练",
    grid_worker: "网格员", grid_leader: "网格长", community_duty: "社区值班",
    street_duty: "街道值班", field_technician: "维保人员", admin: "管理员",
    grid: "网格", community: "社区", street: "街道",
    a_raised: "报警立案", a_confirmed: "确认火警", a_notified: "已通知", a_skipped: "跳过（无人在岗）",
    a_exhausted: "升级到底", a_forwarded: "已转 119", a_acknowledged: "接警",
    a_on_site: "到场", a_resolved: "处置完毕", a_reopened: "重新打开",
    sound_off: "声音已关闭，点此开启 · sound is off: tap to enable",
    ring_waiting: "{n} 起警情等待接警", ring_body: "{address}：请立即接警并到场",
    rule_smoke_alarm: "烟感报警", rule_camera_smoke: "摄像头识别烟雾",
    rule_camera_fire: "摄像头识别明火", rule_high_temperature: "温度过高",
    rule_rate_of_rise: "温度骤升", muted_alert: "（静默期内）",
    overdue: "升级已逾期 {t}", no_timer: "未连接，升级时间未知",
    core_stalled: "告警服务无响应",
    e_reopen_held: "同一建筑已有另一起未处置的警情，请先处置该警情",
    e_reopen_open: "该警情尚未处置，无需重新打开", e_resolved: "该警情已处置，请先重新打开",
    e_already_resolved: "该警情已被处置", e_404: "警情不存在或不在您的辖区",
    e_403: "您的角色不能执行此操作", e_409: "与警情当前状态冲突", e_422: "输入有误",
    e_503: "服务暂时不可用，请稍后重试", e_500: "服务器出错，请稍后重试",
    e_network: "无法连接服务器，请检查网络",
    on_duty: "在岗人员（点击拨打）", paged_h: "已通知", call: "拨打", no_phone: "无电话",
    nobody_on_duty: "当前无人在岗", nobody_paged: "尚未通知任何人", delivered: "已送达",
    sending: "发送中", answered: "已响应",
    ch_mqtt: "App", ch_sms: "短信", ch_wecom: "企业微信", ch_dingtalk: "钉钉", ch_feishu: "飞书",
    ch_email: "邮件", ch_webhook: "Webhook",
    confirm: "人工确认…", confirm_title: "人工确认火警",
    confirm_hint: "到场看到明火或浓烟、或在视频中看到火情时使用：警情立即升为确认火警，通知各级人员，并转报 119。",
    confirm_note: "看到了什么（可不填）", confirm_submit: "确认是火警：通知各级并转 119",
    handoff: "已转 119：{at}，{status}", handoff_none: "确认火警：119 转警未配置",
    h_sent: "已送达", h_pending: "发送中", h_failed: "发送失败，请直接拨打 119",
    offline_title: "无法连接服务器",
    offline_hint: "请检查网络。网络恢复后本页会自动重新连接，无需重新登录。如有火情请直接电话联系。",
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
    view_open: "Open", view_resolved: "Resolved (24 h)", loading: "Loading…",
    empty_resolved: "Nothing resolved in the last 24 hours",
    resolved_at: "Resolved", resolved_by: "Resolved by", note_t: "Note",
    reopen_title: "Reopen", reopen_note: "Why it is not over", reopen_submit: "Reopen the incident",
    reopen_hint: "For an incident resolved wrongly. Reopening pages people again and restarts the escalation at once.",
    reopen_needed: "Write why it is being reopened",
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
    sound_off: "Sound is off: tap to enable · 声音已关闭，点此开启",
    ring_waiting: "{n} waiting for acknowledgement", ring_body: "{address}: acknowledge and go now",
    rule_smoke_alarm: "smoke alarm", rule_camera_smoke: "camera: smoke",
    rule_camera_fire: "camera: fire", rule_high_temperature: "high temperature",
    rule_rate_of_rise: "temperature rising fast", muted_alert: "(in a silence)",
    overdue: "escalation overdue by {t}", no_timer: "not connected: next rung unknown",
    core_stalled: "alert core not responding",
    e_network: "cannot reach the server: check the network",
    on_duty: "On duty now (tap to call)", paged_h: "Paged", call: "Call", no_phone: "no phone",
    nobody_on_duty: "Nobody on duty now", nobody_paged: "Nobody paged yet",
    delivered: "delivered", sending: "sending", answered: "answered",
    ch_mqtt: "app", ch_sms: "SMS", ch_wecom: "WeCom", ch_dingtalk: "DingTalk", ch_feishu: "Feishu",
    ch_email: "e-mail",
    confirm: "Confirm fire…", confirm_title: "Confirm it is a fire",
    confirm_hint: "When you see flames or heavy smoke on site or on video: the incident becomes a confirmed fire, every level is paged and it is handed to the fire service (119).",
    confirm_note: "What you saw (optional)", confirm_submit: "It is a fire: page everyone and hand to 119",
    handoff: "Handed to 119: {at}, {status}", handoff_none: "Confirmed fire: no 119 hand-off configured",
    h_sent: "delivered", h_pending: "sending", h_failed: "failed: call 119 yourself",
    offline_title: "Cannot reach the server",
    offline_hint: "Check the network. This page reconnects by itself when it is back; no need to log in again. For a fire, phone people directly.",
  },
};

// Remembered per device: a phone is one person's.
export let lang = localStorage.getItem("fg-lang") === "en" ? "en" : "zh";

export function setLang(value) {
  lang = value;
  localStorage.setItem("fg-lang", value);
}

// Chinese with English second, for what people read in both (rule names, causes): in the
// Chinese view "烟感报警 smoke alarm", in the English one only the English.
export function both(key) {
  const en = TEXT.en[key];
  return lang === "zh" && en ? `${TEXT.zh[key]} ${en}` : t(key);
}

export function t(key, vars = {}) {
  const s = TEXT[lang][key] ?? TEXT.zh[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}
