"""A real memcached client (pymemcache) doing what an application does:
sets, gets that hit and miss, gets with CAS, deletes, counters, a
multi-get, and a value larger than a segment. Prints one line per command
it sent, for the test to count against the server's log.

usage: memcached_client.py PORT [PAUSE_SECONDS [CONNECTIONS]]
"""
import sys
import time

from pymemcache.client.base import Client

port = int(sys.argv[1])
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
connections = int(sys.argv[3]) if len(sys.argv) > 3 else 1

# A connection that says nothing: its handshake starts the capture's clock.
idle = Client(("127.0.0.1", port), default_noreply=False)
idle.version()
idle.close()
time.sleep(pause)

def workload(p):
    c = Client(("127.0.0.1", port), default_noreply=False)
    for i in range(5):
        c.set(f"{p}user:{i}", f"name-{i}".encode())
    for i in range(8):
        c.get(f"{p}user:{i}")  # 5 hits, 3 misses
    value, cas = c.gets(f"{p}user:1")
    c.cas(f"{p}user:1", b"renamed", cas)
    c.get_many([f"{p}user:0", f"{p}user:2", f"{p}nope"])
    c.set(f"{p}big", b"x" * 20000)
    c.get(f"{p}big")
    c.delete(f"{p}user:3")
    c.delete(f"{p}user:3")  # a miss: NOT_FOUND
    c.set(f"{p}visits", b"10")
    c.incr(f"{p}visits", 5)
    c.incr(f"{p}missing", 1)  # a miss
    c.close()


for n in range(connections):
    workload(f"c{n}:")
print("done", flush=True)
