"""Real gRPC and Kafka peers with large messages, for the wire-size corpus
(scripts/record-wire-corpus.sh). Needs grpcio and kafka-python (the
virtualenv scripts/test.sh builds).

    peers.py grpc-server ADDR PORT      serve until killed
    peers.py grpc-client ADDR PORT      1 MiB unary calls, a stream, a chat
    peers.py kafka BOOTSTRAP            1 MiB batches produced, then fetched
"""

import sys
from concurrent import futures

MIB = 1 << 20
SERVICE = "trawl.wire.Blob"


def payload(n, seed=0):
    # Bytes that neither compress away nor repeat at a short period.
    block = bytes((i * 7 + seed) % 251 for i in range(4093))
    return (block * (n // len(block) + 1))[:n]


def grpc_server(addr, port):
    import grpc

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "Download": grpc.unary_stream_rpc_method_handler(
            lambda request, context: (payload(10_000, i) for i in range(request[0]))
        ),
        "Chat": grpc.stream_stream_rpc_method_handler(lambda requests, context: (m[::-1] for m in requests)),
    }
    options = [("grpc.max_receive_message_length", 16 * MIB), ("grpc.max_send_message_length", 16 * MIB)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"{addr}:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def grpc_client(addr, port):
    import grpc

    options = [
        ("grpc.enable_http_proxy", 0),
        ("grpc.max_receive_message_length", 16 * MIB),
        ("grpc.max_send_message_length", 16 * MIB),
    ]
    with grpc.insecure_channel(f"{addr}:{port}", options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        for i in range(10):
            assert len(echo(payload(MIB, i))) == MIB
        for _ in range(20):
            echo(b"small request")
        assert len(list(channel.unary_stream(f"/{SERVICE}/Download")(bytes([100])))) == 100
        chat = channel.stream_stream(f"/{SERVICE}/Chat")
        assert len(list(chat(iter([payload(2000, i) for i in range(100)])))) == 100


def retried(make):
    # A broker that just started can refuse the first bootstrap.
    import time

    for attempt in range(10):
        try:
            return make()
        except Exception:
            if attempt == 9:
                raise
            time.sleep(0.5)


def kafka(bootstrap):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = retried(lambda: KafkaAdminClient(bootstrap_servers=bootstrap, client_id="wire-admin", request_timeout_ms=10000))
    admin.create_topics([NewTopic("events", num_partitions=1, replication_factor=1)])
    admin.close()
    producer = retried(
        lambda: KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="wire-producer",
            acks=1,
            linger_ms=50,
            batch_size=MIB,
            max_request_size=4 * MIB,
        )
    )
    for batch in range(10):
        sent = [producer.send("events", payload(16_000, batch * 64 + i)) for i in range(64)]
        producer.flush()
        for f in sent:
            f.get(timeout=10)
    producer.close()
    consumer = retried(
        lambda: KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="wire-consumer",
            consumer_timeout_ms=5000,
            fetch_max_bytes=4 * MIB,
            max_partition_fetch_bytes=2 * MIB,
        )
    )
    partition = TopicPartition("events", 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    got = sum(1 for _ in consumer)
    consumer.close()
    print(f"kafka: consumed {got} of 640", flush=True)


MODES = {"grpc-server": grpc_server, "grpc-client": grpc_client, "kafka": kafka}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in MODES:
        sys.exit(__doc__)
    args = [int(a) if a.isdigit() else a for a in sys.argv[2:]]
    MODES[sys.argv[1]](*args)
