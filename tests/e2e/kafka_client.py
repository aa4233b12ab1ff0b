"""Real Kafka clients for trawl's end-to-end test: kafka-python creates a
topic, produces and consumes, and logs every request it sends (its own
DEBUG log: correlation id, request class and version) to the file given.

Usage: kafka_client.py BOOTSTRAP LOGFILE
"""
import logging
import sys

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap, logfile = sys.argv[1], sys.argv[2]
handler = logging.FileHandler(logfile)
handler.setFormatter(logging.Formatter("%(message)s"))
conn_log = logging.getLogger("kafka.net.connection")
conn_log.setLevel(logging.DEBUG)
conn_log.addHandler(handler)

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="trawl-admin", request_timeout_ms=10000)
admin.create_topics([NewTopic("orders", num_partitions=1, replication_factor=1)])
admin.close()

producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="trawl-producer", acks=1, linger_ms=0)
for i in range(5):
    producer.send("orders", f"order-{i}".encode()).get(timeout=10)
producer.flush()
producer.close()

consumer = KafkaConsumer(
    "orders",
    bootstrap_servers=bootstrap,
    client_id="trawl-consumer",
    group_id="billing",
    auto_offset_reset="earliest",
    consumer_timeout_ms=3000,
)
got = sum(1 for _ in consumer)
consumer.close()
print(f"consumed {got}")
