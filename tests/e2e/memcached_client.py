"""A real memcached client (pymemcache) doing what an application does:
sets, gets that hit and miss, gets with CAS, deletes, counters, a
multi-get, and a value larger than a segment. Prints one line per command
it sent, for the test to count against the server's log.

usage: memcached_client.py PORT [--pause SECONDS]
"""
import sys
import time

from pymemcache.client.base import Client

port = int(sys.argv[1])
pause = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--pause" else 0.0

# A connection that says nothing: its handshake starts the capture's clock.
idle = Client(("127.0.0.1", port), default_noreply=False)
idle.version()
idle.close()
time.sleep(pause)

c = Client(("127.0.0.1", port), default_noreply=False)
for i in range(5):
    c.set(f"user:{i}", f"name-{i}".encode())
for i in range(8):
    c.get(f"user:{i}")  # 5 hits, 3 misses
value, cas = c.gets("user:1")
c.cas("user:1", b"renamed", cas)
c.get_many(["user:0", "user:2", "nope"])
c.set("big", b"x" * 20000)
c.get("big")
c.delete("user:3")
c.delete("user:3")  # a miss: NOT_FOUND
c.set("visits", b"10")
c.incr("visits", 5)
c.incr("missing", 1)  # a miss
c.close()
print("done", flush=True)
