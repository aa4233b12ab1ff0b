"""Generates deploy/grafana/trawl-service-graph.json (trawl's Grafana dashboard):

    python3 scripts/grafana-dashboard.py > deploy/grafana/trawl-service-graph.json
"""
import json

PROM = {"type": "prometheus", "uid": "${datasource}"}
NG = {"type": "hamedkarbasi93-nodegraphapi-datasource", "uid": "${nodegraph}"}

L7 = 'server_service_namespace=~"$namespace", protocol=~"$protocol"'
L4 = 'server_service_namespace=~"$namespace"'
EDGE = "client, server, protocol"
EDGE_LEGEND = "{{client}} → {{server}} ({{protocol}})"

def rate(metric, sel, by):
    return f"sum by ({by}) (rate({metric}{{{sel}}}[$__rate_interval]))"

REQ = rate("traces_service_graph_request_total", L7, EDGE)
FAILED = rate("traces_service_graph_request_failed_total", L7, EDGE)
# An edge with no failed series yet still gets 0 %, and idle edges (no
# requests in the window) drop out instead of dividing by zero.
ERR_PCT = f"100 * ({FAILED} or 0 * {REQ}) / ({REQ} > 0)"

def quantile(q, side="server"):
    return (f"histogram_quantile({q}, sum by (le, {EDGE}) "
            f"(rate(traces_service_graph_request_{side}_seconds_bucket{{{L7}}}[$__rate_interval])))")

_id = [0]
def nid():
    _id[0] += 1
    return _id[0]

def target(expr, ref, legend="__auto", instant=False, fmt="time_series"):
    t = {"datasource": PROM, "refId": ref, "expr": expr, "legendFormat": legend,
         "range": not instant, "instant": instant, "format": fmt, "editorMode": "code"}
    return t

def row(title, y, collapsed=False, panels=None):
    r = {"type": "row", "id": nid(), "title": title, "collapsed": collapsed,
         "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": panels or []}
    return r

def timeseries(title, desc, targets, gp, unit, extra_defaults=None):
    d = {"unit": unit, "color": {"mode": "palette-classic"},
         "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                    "spanNulls": False, "axisSoftMin": 0},
         "min": 0}
    if extra_defaults:
        d.update(extra_defaults)
    return {"type": "timeseries", "id": nid(), "title": title, "description": desc, "datasource": PROM,
            "gridPos": gp, "targets": targets,
            "fieldConfig": {"defaults": d, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                   "calcs": ["mean", "max", "lastNotNull"], "sortBy": "Max", "sortDesc": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}

def stat(title, desc, targets, gp, unit, thresholds, no_value="0", text_mode="value_and_name", decimals=None):
    d = {"unit": unit, "noValue": no_value, "color": {"mode": "thresholds"},
         "thresholds": {"mode": "absolute", "steps": thresholds}}
    if decimals is not None:
        d["decimals"] = decimals
    return {"type": "stat", "id": nid(), "title": title, "description": desc, "datasource": PROM,
            "gridPos": gp, "targets": targets,
            "fieldConfig": {"defaults": d, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                        "orientation": "auto", "textMode": text_mode, "wideLayout": True,
                        "showPercentChange": False}}

GREEN = {"color": "green", "value": None}

panels = []
y = 0

# (1) Live map -------------------------------------------------------------
panels.append(row("Live map", y)); y += 1
def nodegraph(title, desc, query, gp):
    return {"type": "nodeGraph", "id": nid(), "title": title, "description": desc, "datasource": NG,
            "gridPos": gp,
            "targets": [{"datasource": NG, "refId": "A", "queryText": query}],
            "options": {"nodes": {"mainStatUnit": "", "secondaryStatUnit": "",
                                  "arcs": [{"field": "arc__ok", "color": "green"},
                                           {"field": "arc__failed", "color": "red"}]},
                        "edges": {"mainStatUnit": "", "secondaryStatUnit": ""}}}
panels.append(nodegraph(
    "Live map — L7 requests",
    "trawl's live L7 map through the Node Graph API data source (GET /api/graph/data?map=l7&group_by=$group_by). "
    "Nodes: requests served per second, error share (red arc). Edges: req/s, error %, protocol, p99.",
    "map=l7&group_by=$group_by", {"h": 16, "w": 24, "x": 0, "y": y})); y += 16
panels.append(nodegraph(
    "Live map — L4 flows",
    "trawl's live L4 map (GET /api/graph/data?map=l4&group_by=$group_by): bytes per second per edge, "
    "failed TCP connects as the red arc.",
    "map=l4&group_by=$group_by", {"h": 14, "w": 24, "x": 0, "y": y})); y += 14

# (2)-(4) Edges ---------------------------------------------------------------
panels.append(row("Edges", y)); y += 1
table = {
    "type": "table", "id": nid(), "title": "Edges: client → server → protocol",
    "description": "Per edge: request rate, error rate and server-side p99 latency (instant queries, merged).",
    "datasource": PROM, "gridPos": {"h": 12, "w": 24, "x": 0, "y": y},
    "targets": [
        target(REQ, "A", instant=True, fmt="table"),
        target(ERR_PCT, "B", instant=True, fmt="table"),
        target(quantile(0.99), "C", instant=True, fmt="table"),
    ],
    "transformations": [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "indexByName": {"client": 0, "server": 1, "protocol": 2, "Value #A": 3, "Value #B": 4, "Value #C": 5},
            "renameByName": {"client": "Client", "server": "Server", "protocol": "Protocol",
                             "Value #A": "Requests/s", "Value #B": "Errors %", "Value #C": "p99 latency"}}},
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "Requests/s", "desc": True}]}},
    ],
    "fieldConfig": {
        "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
                     "color": {"mode": "thresholds"},
                     "thresholds": {"mode": "absolute", "steps": [GREEN]}},
        "overrides": [
            {"matcher": {"id": "byName", "options": "Requests/s"},
             "properties": [{"id": "unit", "value": "reqps"}, {"id": "decimals", "value": 2}]},
            {"matcher": {"id": "byName", "options": "Errors %"},
             "properties": [{"id": "unit", "value": "percent"}, {"id": "decimals", "value": 2},
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                            {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                                GREEN, {"color": "orange", "value": 1}, {"color": "red", "value": 5}]}}]},
            {"matcher": {"id": "byName", "options": "p99 latency"},
             "properties": [{"id": "unit", "value": "s"}, {"id": "decimals", "value": 3}]},
        ]},
    "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""},
                "sortBy": [{"displayName": "Requests/s", "desc": True}]},
}
panels.append(table); y += 12

panels.append(timeseries(
    "Request rate per edge", "Requests per second, client → server (protocol).",
    [target(REQ, "A", EDGE_LEGEND)], {"h": 9, "w": 12, "x": 0, "y": y}, "reqps"))
panels.append(timeseries(
    "Error rate per edge", "Failed requests as a share of all requests, per edge (edges with no traffic in the window are left out).",
    [target(ERR_PCT, "A", EDGE_LEGEND)], {"h": 9, "w": 12, "x": 12, "y": y}, "percent",
    {"max": 100, "thresholds": {"mode": "absolute", "steps": [GREEN, {"color": "red", "value": 5}]},
     "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "spanNulls": False, "axisSoftMin": 0, "thresholdsStyle": {"mode": "dashed"}}}))
y += 9
panels.append(timeseries(
    "Latency p50 / p95 / p99 per edge (server side)",
    "histogram_quantile over traces_service_graph_request_server_seconds_bucket, summed by (le, client, server, protocol).",
    [target(quantile(0.5), "A", "p50 " + EDGE_LEGEND),
     target(quantile(0.95), "B", "p95 " + EDGE_LEGEND),
     target(quantile(0.99), "C", "p99 " + EDGE_LEGEND)],
    {"h": 10, "w": 24, "x": 0, "y": y}, "s"))
y += 10

# (5) Top talkers ------------------------------------------------------------
panels.append(row("Top talkers (L4)", y)); y += 1
TOP = f"topk(10, {rate('trawl_service_graph_bytes_total', L4, 'client, server')})"
panels.append({
    "type": "bargauge", "id": nid(), "title": "Top talkers: bytes/s per client → server",
    "description": "topk(10) of L4 bytes per second, both directions, per client → server pair.",
    "datasource": PROM, "gridPos": {"h": 10, "w": 12, "x": 0, "y": y},
    "targets": [target(TOP, "A", "{{client}} → {{server}}", instant=True)],
    "fieldConfig": {"defaults": {"unit": "Bps", "min": 0, "color": {"mode": "continuous-BlYlRd"},
                                 "thresholds": {"mode": "absolute", "steps": [GREEN]}},
                    "overrides": []},
    "options": {"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                "valueMode": "color", "namePlacement": "auto", "sizing": "auto", "minVizHeight": 16,
                "maxVizHeight": 300, "minVizWidth": 8,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}})
panels.append(timeseries(
    "Bytes/s by direction (top talkers)",
    "L4 bytes per second of the 10 heaviest client → server pairs, split by direction.",
    [target(f"topk(10, {rate('trawl_service_graph_bytes_total', L4, 'client, server, direction')})", "A",
            "{{client}} → {{server}} {{direction}}")],
    {"h": 10, "w": 12, "x": 12, "y": y}, "Bps"))
y += 10

# (6) TCP health -----------------------------------------------------------------
panels.append(row("TCP health", y)); y += 1
for i, (title, metric, desc) in enumerate([
        ("TCP retransmits/s per edge", "trawl_service_graph_tcp_retransmits_total", "Retransmitted TCP segments per second, per client → server."),
        ("TCP resets/s per edge", "trawl_service_graph_tcp_resets_total", "TCP RSTs per second, per client → server."),
        ("Failed TCP connects/s per edge", "trawl_service_graph_tcp_failed_connects_total", "Connection attempts that never completed the handshake, per second."),
]):
    panels.append(timeseries(title, desc,
        [target(rate(metric, L4, "client, server"), "A", "{{client}} → {{server}}")],
        {"h": 9, "w": 8, "x": 8 * i, "y": y}, "cps"))
y += 9

# (7) trawl itself -------------------------------------------------------------
panels.append(row("trawl", y)); y += 1
panels.append(stat(
    "Series kept vs max", "Service-graph series kept (L7 and L4) and the cap above which new pairs fold into client/server \"other\".",
    [target("max(trawl_service_graph_series)", "A", "kept", instant=True),
     target("max(trawl_service_graph_max_series)", "B", "max", instant=True)],
    {"h": 5, "w": 5, "x": 0, "y": y}, "short", [{"color": "blue", "value": None}], no_value="-"))
g = stat(
    "Series cap used", "Series kept as a share of the cap (per trawl instance, the highest).",
    [target("100 * max(trawl_service_graph_series / trawl_service_graph_max_series)", "A", "used", instant=True)],
    {"h": 5, "w": 3, "x": 5, "y": y}, "percent",
    [GREEN, {"color": "orange", "value": 80}, {"color": "red", "value": 95}], no_value="-", text_mode="value")
g["type"] = "gauge"
g["fieldConfig"]["defaults"].update({"min": 0, "max": 100})
g["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showThresholdLabels": False, "showThresholdMarkers": True, "orientation": "auto", "sizing": "auto",
                "minVizHeight": 75, "minVizWidth": 75}
panels.append(g)
panels.append(stat(
    "Folded requests/s", "Requests folded into client=\"other\", server=\"other\" because the series cap was reached.",
    [target("sum(rate(trawl_service_graph_folded_requests_total[$__rate_interval]))", "A", "folded")],
    {"h": 5, "w": 4, "x": 8, "y": y}, "reqps",
    [GREEN, {"color": "orange", "value": 0.001}], text_mode="value", decimals=2))
panels.append(stat(
    "Plugin faults/s", "Dissector plugin faults per second (all plugins); see trawl_plugin_faults_total{plugin}.",
    [target("sum(rate(trawl_plugin_faults_total[$__rate_interval]))", "A", "faults")],
    {"h": 5, "w": 4, "x": 12, "y": y}, "cps",
    [GREEN, {"color": "red", "value": 0.001}], text_mode="value", decimals=2))
panels.append(stat(
    "Packets dropped/s", "Packets trawl dropped before dissection, per second.",
    [target("sum(rate(trawl_packets_dropped_total[$__rate_interval]))", "A", "dropped")],
    {"h": 5, "w": 4, "x": 16, "y": y}, "pps",
    [GREEN, {"color": "red", "value": 0.001}], text_mode="value", decimals=2))
panels.append(stat(
    "Packets / records per second", "Packets received and records produced per second.",
    [target("sum(rate(trawl_packets_received_total[$__rate_interval]))", "A", "packets", instant=False),
     target("sum(rate(trawl_records_total[$__rate_interval]))", "B", "records", instant=False)],
    {"h": 5, "w": 4, "x": 20, "y": y}, "short", [{"color": "blue", "value": None}], decimals=1))
y += 5
panels.append(timeseries(
    "Records and faults per plugin", "Records per second and faults per second, per dissector plugin.",
    [target("sum by (plugin) (rate(trawl_plugin_records_total[$__rate_interval]))", "A", "{{plugin}} records"),
     target("sum by (plugin) (rate(trawl_plugin_faults_total[$__rate_interval]))", "B", "{{plugin}} faults")],
    {"h": 8, "w": 24, "x": 0, "y": y}, "cps"))
y += 8

templating = [
    {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
     "current": {}, "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []},
    {"type": "datasource", "name": "nodegraph", "label": "trawl (Node Graph API)",
     "query": "hamedkarbasi93-nodegraphapi-datasource",
     "current": {}, "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []},
    {"type": "query", "name": "namespace", "label": "Server namespace", "datasource": PROM,
     "definition": "label_values(traces_service_graph_request_total, server_service_namespace)",
     "query": "label_values(traces_service_graph_request_total, server_service_namespace)",
     "multi": True, "includeAll": True, "allValue": ".*",
     "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
     "refresh": 2, "sort": 1, "regex": "", "hide": 0, "options": []},
    {"type": "query", "name": "protocol", "label": "Protocol", "datasource": PROM,
     "definition": "label_values(traces_service_graph_request_total, protocol)",
     "query": "label_values(traces_service_graph_request_total, protocol)",
     "multi": True, "includeAll": True, "allValue": ".*",
     "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
     "refresh": 2, "sort": 1, "regex": "", "hide": 0, "options": []},
    {"type": "custom", "name": "group_by", "label": "Map grouping", "query": "pod,namespace,node",
     "current": {"selected": True, "text": "pod", "value": "pod"},
     "options": [{"selected": v == "pod", "text": v, "value": v} for v in ["pod", "namespace", "node"]],
     "multi": False, "includeAll": False, "hide": 0},
]

dash = {
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        {"type": "datasource", "id": "hamedkarbasi93-nodegraphapi-datasource", "name": "Node Graph API", "version": "1.0.0"},
        {"type": "panel", "id": "nodeGraph", "name": "Node Graph", "version": ""},
        {"type": "panel", "id": "table", "name": "Table", "version": ""},
        {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        {"type": "panel", "id": "bargauge", "name": "Bar gauge", "version": ""},
        {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
        {"type": "panel", "id": "gauge", "name": "Gauge", "version": ""},
    ],
    "id": None,
    "uid": "trawl-service-graph",
    "title": "trawl — service graph",
    "description": "trawl's live L4/L7 workload map: Node Graph of the live map, per-edge request/error/latency, top talkers, TCP health and trawl's own health.",
    "tags": ["trawl", "service-graph", "kubernetes"],
    "editable": True,
    "graphTooltip": 1,
    "fiscalYearStartMonth": 0,
    "liveNow": False,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "browser",
    "weekStart": "",
    "links": [],
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": templating},
    "panels": panels,
}
print(json.dumps(dash, indent=2, ensure_ascii=False))
