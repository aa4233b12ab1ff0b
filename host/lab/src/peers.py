"""The live demo's Python workloads (trawl writes this file out and runs it
inside the demo's pods): a gRPC service and client (grpcio), and a Kafka
client (kafka-python) for the Tansu broker.

    peers.py grpc-server IP PORT
    peers.py grpc-client HOST PORT
    peers.py kafka-client HOST:PORT

The clients loop until killed, a round a second.
"""

import sys
import time
from concurrent import futures

SERVICE = "shop.orders.Orders"


def grpc_server(ip, port):
    import grpc

    def place(request, context):
        return b"order-id:" + request[:16]

    def track(request, context):
        for step in (b"packed", b"shipped", b"delivered"):
            yield step

    def lookup(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such order")

    handlers = {
        "Place": grpc.unary_unary_rpc_method_handler(place),
        "Track": grpc.unary_stream_rpc_method_handler(track),
        "Lookup": grpc.unary_unary_rpc_method_handler(lookup),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"{ip}:{port}")
    server.start()
    server.wait_for_termination()


def grpc_client(host, port):
    import grpc

    n = 0
    while True:
        try:
            with grpc.insecure_channel(f"{host}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
                grpc.channel_ready_future(ch).result(timeout=5)
                while True:
                    n += 1
                    ch.unary_unary(f"/{SERVICE}/Place")(f"cart-{n}".encode(), timeout=5)
                    list(ch.unary_stream(f"/{SERVICE}/Track")(b"x", timeout=5))
                    if n % 5 == 0:
                        try:
                            ch.unary_unary(f"/{SERVICE}/Lookup")(b"missing", timeout=5)
                        except grpc.RpcError:
                            pass
                    time.sleep(1)
        except Exception:
            time.sleep(1)


def kafka_client(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="demo-admin", request_timeout_ms=10000)
            try:
                admin.create_topics([NewTopic("orders", num_partitions=1, replication_factor=1)])
            except Exception:
                pass
            admin.close()
            producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="checkout", acks=1, linger_ms=0)
            consumer = KafkaConsumer(
                "orders",
                bootstrap_servers=bootstrap,
                client_id="billing",
                group_id="billing",
                auto_offset_reset="earliest",
                consumer_timeout_ms=500,
            )
            n = 0
            while True:
                n += 1
                producer.send("orders", f"order-{n}".encode()).get(timeout=10)
                for _ in consumer:
                    pass
                time.sleep(1)
        except Exception:
            time.sleep(1)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "grpc-server":
        grpc_server(sys.argv[2], int(sys.argv[3]))
    elif mode == "grpc-client":
        grpc_client(sys.argv[2], int(sys.argv[3]))
    elif mode == "kafka-client":
        kafka_client(sys.argv[2])
    else:
        sys.exit(f"unknown mode {mode}")
