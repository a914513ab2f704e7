"""Ingest and alert health (接入与告警健康): for operators on call. Everything from
Prometheus, i.e. from the metrics firegrid's processes export (ingest/metrics.py,
devices/metrics.py, alerts/metrics.py): message rates, lag, dead letters, batch and page
latency, connection state, the liveness flush, the monitor, TimescaleDB's jobs and the alert
core."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.common import base, promql, sized

UID = "firegrid-ingest-health"
R = "[$__rate_interval]"


def _q(quantile: float, metric: str, by: str = "") -> str:
    labels = f"le{', ' + by if by else ''}"
    return (f"histogram_quantile({quantile}, sum by ({labels}) "
            f"(rate({metric}_bucket{R})))")


def _series(title: str, targets: list, unit: str, description: str, w: int = 12,
            bars: bool = False) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit)
    for i, t in enumerate(targets):
        panel.with_target(t.ref_id(chr(ord("A") + i)))
    if bars:
        panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(60)
    return sized(panel, w, 8, description)


def _right_axis(unit: str) -> list[dm.DynamicConfigValue]:
    """Field overrides putting one series on a right-hand axis in its own unit."""
    return [dm.DynamicConfigValue(id_val="unit", value=unit),
            dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]


_UP_DOWN = [dm.ValueMap(options={
    "0": dm.ValueMappingResult(text="down", color="red"),
    "1": dm.ValueMappingResult(text="up", color="green")})]


def build() -> dash.Dashboard:
    d = base(UID, "firegrid · 接入与告警健康 Ingest and alert health",
             "Ingest, liveness, the maintenance monitor and the alert core, from Prometheus. "
             "For operators on call.", "now-3h", "30s", ["ingest", "alerts", "operations"])
    d.with_row(dash.Row("接入 Ingest"))
    d.with_panel(_series("消息速率 Messages", [
        promql(f"sum(rate(firegrid_mqtt_messages_received{{service=\"ingest\"}}{R}))", "received"),
        promql(f"sum(rate(firegrid_ingest_messages_committed_total{R}))", "committed"),
        promql(f"sum(rate(firegrid_ingest_messages_acked_total{R}))", "acknowledged"),
    ], "ops", "MQTT messages per second over all ingest processes: received from the "
       "broker, committed to PostgreSQL (rows or dead letters), acknowledged after commit."))
    d.with_panel(_series("写入行 Rows", [
        promql(f"sum by (table, outcome) (rate(firegrid_ingest_rows_total{R}))",
               "{{table}} {{outcome}}"),
    ], "ops", "Rows committed per second by table and outcome (stored or duplicate: a "
       "redelivery stored once)."))
    d.with_panel(_series("延迟 Lag (arrival - device time)", [
        promql(_q(0.5, "firegrid_ingest_lag_seconds"), "p50"),
        promql(_q(0.99, "firegrid_ingest_lag_seconds"), "p99"),
    ], "s", "How late messages reach ingest after the device stamped them. A long tail "
       "after an outage is buffered messages flushing; a rising p50 is ingest falling behind."))
    d.with_panel(_series("死信 Dead letters by reason", [
        promql(f"sum by (reason) (increase(firegrid_ingest_dead_letters_total{R}))",
               "{{reason}}"),
        promql(f"sum(increase(firegrid_ingest_unstorable_total{R}))", "unstorable"),
    ], "short", "Messages that could not be stored as readings or events, by reason (kept "
       "in the dead_letters table); 'unstorable' could not even be dead-lettered (logged).",
        bars=True))
    d.with_panel(_series("批次写入 Batch write latency", [
        promql(_q(0.5, "firegrid_ingest_batch_write_seconds"), "p50"),
        promql(_q(0.99, "firegrid_ingest_batch_write_seconds"), "p99"),
        promql(_q(0.5, "firegrid_ingest_batch_messages"), "messages per batch p50"),
    ], "s", "Time to write and commit one batch, retries included; the batch size on the "
       "right axis.").override_by_name("messages per batch p50", _right_axis("short")))
    d.with_panel(_series("积压与重试 In flight and retries", [
        promql("sum(firegrid_ingest_inflight_messages)", "in flight"),
        promql(f"sum(rate(firegrid_ingest_db_retries_total{R}))", "db retries/s"),
        promql(f"sum(increase(firegrid_mqtt_session_lost_total{{service=\"ingest\"}}{R}))",
               "broker sessions lost"),
    ], "short", "Messages received and not yet acknowledged; batch writes retried after a "
       "transient database error; reconnects where the broker had lost the session."))
    d.with_panel(sized(
        stat.Panel().title("连接 Connections")
        .with_target(promql('min(firegrid_mqtt_connected{service="ingest"})',
                            "broker (worst ingest)").ref_id("A"))
        .with_target(promql("min(firegrid_ingest_database_connected)",
                            "database (worst ingest)").ref_id("B"))
        .with_target(promql("max(firegrid_monitor_offline_paused)", "offline detection paused")
                     .ref_id("C"))
        .mappings(_UP_DOWN).color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .override_by_name("offline detection paused", [dm.DynamicConfigValue(
            id_val="mappings", value=[{"type": "value", "options": {
                "0": {"text": "no", "color": "green"}, "1": {"text": "PAUSED", "color": "red"}}}])])
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"])),
        24, 4, "Whether every ingest process is connected to the broker and subscribed, and "
        "to the database; whether the monitor has paused offline detection because no ingest "
        "is watching."))

    d.with_row(dash.Row("在线监测与维保 Liveness and maintenance"))
    d.with_panel(_series("在线刷新 Liveness flush", [
        promql(_q(0.99, "firegrid_liveness_flush_seconds"), "flush p99"),
        promql(f"sum(rate(firegrid_liveness_flush_failures_total{R}))", "failures/s"),
    ], "s", "Time to write one liveness flush (last_seen, conditions, quarantine), and "
       "failed flushes (kept and merged into the next).", w=8))
    d.with_panel(_series("待刷新与隔离 Pending and quarantine", [
        promql("sum(firegrid_liveness_pending_devices)", "pending devices"),
        promql("max(firegrid_quarantine_unclaimed_ids)", "unclaimed unknown ids"),
        promql(f"sum(increase(firegrid_liveness_dropped_total{R}))", "observations dropped"),
    ], "short", "Device ids observed and not yet flushed, unknown ids nobody has claimed, "
       "observations dropped because the pending set was full.", w=8))
    d.with_panel(_series("维保工单 Open tickets", [
        promql("max by (condition) (firegrid_maintenance_open_tickets)", "{{condition}}"),
    ], "short", "Open maintenance tickets by condition, as the monitor last counted them.",
        w=8))

    d.with_row(dash.Row("TimescaleDB 后台任务 TimescaleDB jobs"))
    d.with_panel(_series("任务连续失败 Consecutive failures", [
        promql("max by (job_name) (firegrid_timescale_job_consecutive_failures)",
               "{{job_name}}"),
    ], "short", "Runs of each TimescaleDB job (compression, retention, the hourly aggregate's "
       "refresh) that failed since its last success, from the monitor's check "
       "(job_errors). Two or more: FiregridTimescaleJobFailing. Empty on plain PostgreSQL."))
    d.with_panel(sized(
        stat.Panel().title("上次成功 Last success")
        .with_target(promql("max by (job_name) "
                            "(firegrid_timescale_job_last_success_timestamp_seconds > 0) * 1000",
                            "{{job_name}}").ref_id("A"))
        .unit("dateTimeFromNow").graph_mode(cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"])),
        12, 8, "When each TimescaleDB job last succeeded (jobs that never did are left out: "
        "see the failures). Over two days ago: FiregridTimescaleJobStale."))

    d.with_row(dash.Row("告警核心 Alert core"))
    d.with_panel(_series("告警 Alerts and incidents", [
        promql(f"sum by (rule) (increase(firegrid_alerts_total{R}))", "{{rule}}"),
        promql(f"sum(increase(firegrid_incidents_opened_total{R}))", "incidents opened"),
        promql(f"sum(increase(firegrid_incidents_confirmed_total{R}))", "confirmed"),
        promql(f"sum(increase(firegrid_alerts_unroutable_total{R}))", "unroutable"),
    ], "short", "Alerts by rule, incidents opened and confirmed, alerts from unregistered "
       "devices (kept, not routed).", bars=True))
    d.with_panel(_series("消息处理 Messages evaluated", [
        promql(f"sum by (outcome) (rate(firegrid_alerts_messages_total{R}))", "{{outcome}}"),
        promql(_q(0.99, "firegrid_alerts_evaluate_seconds"), "evaluate p99 (s)"),
    ], "ops", "Device messages the alert core evaluated per second by outcome; batch "
       "receive-to-commit time p99 on the right axis.").override_by_name(
        "evaluate p99 (s)", _right_axis("s")))
    d.with_panel(_series("通知 Pages", [
        promql(f"sum by (channel, outcome) (increase(firegrid_pages_total{R}))",
               "{{channel}} {{outcome}}"),
        promql("max(firegrid_pages_pending)", "pending"),
    ], "short", "Page attempts by channel and outcome, and pages waiting to be sent."))
    d.with_panel(_series("通知延迟 Page latency", [
        promql(_q(0.5, "firegrid_page_latency_seconds", "channel"), "{{channel}} p50"),
        promql(_q(0.99, "firegrid_page_latency_seconds", "channel"), "{{channel}} p99"),
    ], "s", "From the page being written to the channel accepting it, per channel."))
    d.with_panel(_series("升级 Escalations", [
        promql(f"sum by (outcome) (increase(firegrid_escalations_total{R}))", "{{outcome}}"),
        promql(_q(0.99, "firegrid_escalation_lateness_seconds"), "timer lateness p99 (s)"),
    ], "short", "Ladder rungs fired, skipped (nobody on duty) or exhausted; how late the "
       "escalation timers fired (right axis).").override_by_name(
        "timer lateness p99 (s)", _right_axis("s")))
    d.with_panel(_series("未结事件与错误 Open incidents and errors", [
        promql("max by (severity) (firegrid_incidents_open)", "open {{severity}}"),
        promql(f"sum by (loop) (increase(firegrid_alerts_db_errors_total{R}))",
               "db errors {{loop}}"),
    ], "short", "Open incidents by severity (every process reports the same count, hence "
       "max), and database errors in the alert core by loop."))
    return d
