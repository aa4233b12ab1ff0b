"""A real grpcio server and client for trawl's end-to-end gRPC test.

    grpc_peer.py server PORT CALL_LOG   serve until killed; one JSON line per call
    grpc_peer.py client PORT CALL_LOG   make every kind of call, log each, exit

The service is defined with grpcio's generic handlers and raw-bytes
messages, so no generated code (or protoc) is needed. The server's call log
is the ground truth the test compares trawl's records with: the method, the
client's address, the kind of call as the service declares it, the
messages each way as the server counted them, and the status it returned.
The client's log adds what only it knows: which calls it compressed.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "trawl.e2e.Echo"
_log_lock = threading.Lock()


def log_call(path, context, kind, requests, responses, code):
    line = {
        "method": f"/{SERVICE}/{path}",
        "peer": context.peer(),
        "kind": kind,
        "requests": requests,
        "responses": responses,
        "code": code.value[0],
    }
    with _log_lock, open(sys.argv[3], "a") as f:
        f.write(json.dumps(line) + "\n")


def unary(request, context):
    log_call("Unary", context, "unary", 1, 1, grpc.StatusCode.OK)
    return request[::-1]


def fail(request, context):
    log_call("Fail", context, "unary", 1, 0, grpc.StatusCode.NOT_FOUND)
    context.abort(grpc.StatusCode.NOT_FOUND, "no such key")


def download(request, context):
    # The first byte says how many messages; past 5 the server gives up
    # halfway with RESOURCE_EXHAUSTED, after sending two.
    count = request[0]
    if count > 5:
        for i in range(2):
            yield bytes([i]) * 100
        log_call("Download", context, "server", 1, 2, grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")
    for i in range(count):
        yield bytes([i]) * (100 + i)
    log_call("Download", context, "server", 1, count, grpc.StatusCode.OK)


def upload(request_iterator, context):
    n = sum(1 for _ in request_iterator)
    log_call("Upload", context, "client", n, 1, grpc.StatusCode.OK)
    return n.to_bytes(4, "big")


def chat(request_iterator, context):
    n = 0
    for message in request_iterator:
        n += 1
        yield message.upper()
    log_call("Chat", context, "bidi", n, n, grpc.StatusCode.OK)


def serve(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Download": grpc.unary_stream_rpc_method_handler(download),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def client(port, log_path):
    options = [("grpc.enable_http_proxy", 0)]
    log = open(log_path, "a")

    def logged(name, compressed, run):
        try:
            run()
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        log.write(json.dumps({"method": f"/{SERVICE}/{name}", "compressed": compressed, "code": code.value[0]}) + "\n")
        return code

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}")
        logged("Unary", False, lambda: call("unary_unary", "Unary")(b"hello trawl"))
        gzip = grpc.Compression.Gzip
        logged("Unary", True, lambda: call("unary_unary", "Unary")(b"x" * 3000, compression=gzip))
        assert logged("Fail", False, lambda: call("unary_unary", "Fail")(b"key")) == grpc.StatusCode.NOT_FOUND
        logged("Download", False, lambda: list(call("unary_stream", "Download")(bytes([3]))))
        code = logged("Download", False, lambda: list(call("unary_stream", "Download")(bytes([9]))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        logged("Upload", False, lambda: call("stream_unary", "Upload")(iter([b"a", b"bb", b"ccc", b"dddd"])))
        logged("Chat", False, lambda: list(call("stream_stream", "Chat")(iter([b"one", b"two", b"three"]))))
    log.close()
    # Let the server finish its side of the connection before the capture stops.
    time.sleep(0.3)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), sys.argv[3])
