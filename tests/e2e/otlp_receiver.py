#!/usr/bin/env python3
"""Minimal OTLP metrics receiver for tests: prints one JSON line per data point.

  pip install 'opentelemetry-proto==1.45.2' 'grpcio==1.85.4'   # protobuf 7.x comes along
  python otlp_receiver.py --grpc-port 4317                # OTLP/gRPC  (MetricsService/Export)
  python otlp_receiver.py --http-port 4318                # OTLP/HTTP  (POST /v1/metrics, protobuf or JSON)
  python otlp_receiver.py --grpc-port 4317 --http-port 4318

The HTTP mode uses only http.server + opentelemetry-proto; grpcio is imported only
when --grpc-port is given.  Port 0 picks a free port; the bound ports are printed
to stderr as "listening grpc=PORT" / "listening http=PORT" (stdout is data only).
Each stdout line looks like:
  {"transport": "http", "resource": {"k8s.namespace.name": "shop", ...},
   "scope": "trawl", "metric": "http.server.request.duration", "type": "histogram",
   "unit": "s", "temporality": "cumulative", "monotonic": null,
   "attributes": {"http.request.method": "GET", ...},
   "start_time_unix_nano": ..., "time_unix_nano": ...,
   "count": 3, "sum": 0.12, "bucket_counts": [...], "explicit_bounds": [...]}
"""
import argparse
import gzip
import json
import signal
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

_print_lock = threading.Lock()

_TEMPORALITY = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)  # string_value, bool_value, int_value, double_value


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def number(dp):
    kind = dp.WhichOneof("value")
    return None if kind is None else getattr(dp, kind)


def emit(transport, req):
    """Print one JSON line per data point of an ExportMetricsServiceRequest."""
    lines = []
    for rm in req.resource_metrics:
        resource = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")  # gauge|sum|histogram|exponential_histogram|summary
                base = {
                    "transport": transport,
                    "resource": resource,
                    "scope": sm.scope.name,
                    "metric": m.name,
                    "type": kind,
                    "unit": m.unit,
                }
                if kind is None:
                    lines.append(base)
                    continue
                data = getattr(m, kind)
                base["temporality"] = _TEMPORALITY.get(
                    getattr(data, "aggregation_temporality", 0), None
                ) if kind in ("sum", "histogram", "exponential_histogram") else None
                base["monotonic"] = data.is_monotonic if kind == "sum" else None
                for dp in data.data_points:
                    line = dict(base)
                    line["attributes"] = attrs(dp.attributes)
                    line["start_time_unix_nano"] = dp.start_time_unix_nano
                    line["time_unix_nano"] = dp.time_unix_nano
                    if kind in ("gauge", "sum"):
                        line["value"] = number(dp)
                    elif kind == "histogram":
                        line["count"] = dp.count
                        line["sum"] = dp.sum if dp.HasField("sum") else None
                        line["bucket_counts"] = list(dp.bucket_counts)
                        line["explicit_bounds"] = list(dp.explicit_bounds)
                        line["min"] = dp.min if dp.HasField("min") else None
                        line["max"] = dp.max if dp.HasField("max") else None
                    elif kind == "exponential_histogram":
                        line["count"] = dp.count
                        line["sum"] = dp.sum if dp.HasField("sum") else None
                        line["scale"] = dp.scale
                    elif kind == "summary":
                        line["count"] = dp.count
                        line["sum"] = dp.sum
                    lines.append(line)
    with _print_lock:
        for line in lines:
            sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------- OTLP/HTTP
class OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/v1/metrics":
            self._reply(404, b"", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                raise ValueError(f"unsupported Content-Encoding {encoding}")
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            req = ExportMetricsServiceRequest()
            if ctype == "application/json":
                json_format.Parse(body, req, ignore_unknown_fields=True)
                emit("http-json", req)
                self._reply(200, b"{}", "application/json")
            else:  # application/x-protobuf
                req.ParseFromString(body)
                emit("http", req)
                self._reply(200, ExportMetricsServiceResponse().SerializeToString(),
                            "application/x-protobuf")
        except Exception as e:  # malformed payload -> 400, as the spec says
            print(f"bad request: {e!r}", file=sys.stderr, flush=True)
            self._reply(400, str(e).encode(), "text/plain")

    def _reply(self, code, payload, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):  # keep stdout clean; access log to stderr
        print("http: " + fmt % args, file=sys.stderr, flush=True)


def start_http(host, port):
    server = ThreadingHTTPServer((host, port), OtlpHttpHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening http={server.server_address[1]}", file=sys.stderr, flush=True)
    return server


# ---------------------------------------------------------------- OTLP/gRPC
def start_grpc(host, port):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            emit("grpc", request)
            return ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    print(f"listening grpc={bound}", file=sys.stderr, flush=True)
    return server


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--grpc-port", type=int, help="serve OTLP/gRPC on this port (4317 is usual)")
    ap.add_argument("--http-port", type=int, help="serve OTLP/HTTP on this port (4318 is usual)")
    a = ap.parse_args()
    if a.grpc_port is None and a.http_port is None:
        a.grpc_port = 4317
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    grpc_server = start_grpc(a.host, a.grpc_port) if a.grpc_port is not None else None
    http_server = start_http(a.host, a.http_port) if a.http_port is not None else None
    stop.wait()
    if grpc_server is not None:
        grpc_server.stop(grace=1).wait()
    if http_server is not None:
        http_server.shutdown()


if __name__ == "__main__":
    main()
