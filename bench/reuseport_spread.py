#!/usr/bin/env python3
"""How evenly Linux spreads connections over SO_REUSEPORT listeners.

Binds N listeners on one loopback port with SO_REUSEPORT, opens CONNS
connections from SOURCES source addresses (127.0.0.2, 127.0.0.3, ...),
accepts them on whichever listener the kernel chose, and prints how many
each listener got. Used to choose how `lubdub server --threads N` spreads
connections over its event loops (BENCHMARKS.md, "Choosing how loops get their connections").

    python3 bench/reuseport_spread.py [LISTENERS] [CONNS] [SOURCES]
"""
import selectors
import socket
import sys
import time

listeners_wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 2
conns_wanted = int(sys.argv[2]) if len(sys.argv) > 2 else 19000
sources = int(sys.argv[3]) if len(sys.argv) > 3 else 4

listeners = []
port = 0
for _ in range(listeners_wanted):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    listener.listen(4096)
    listener.setblocking(False)
    listeners.append(listener)

selector = selectors.DefaultSelector()
for number, listener in enumerate(listeners):
    selector.register(listener, selectors.EVENT_READ, number)

accepted = [0] * listeners_wanted


def accept_ready(timeout):
    """Accepts what every ready listener holds, counting it per listener."""
    for key, _ in selector.select(timeout=timeout):
        while True:
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                break
            accepted[key.data] += 1
            conn.close()


held = []
started = time.monotonic()
opened = 0
while opened < conns_wanted:
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.bind((f"127.0.0.{2 + opened % sources}", 0))
    client.connect(("127.0.0.1", port))
    held.append(client)
    opened += 1
    accept_ready(0)
while sum(accepted) < conns_wanted:
    accept_ready(1)
elapsed = time.monotonic() - started
mean = conns_wanted / listeners_wanted
spread = max(abs(count - mean) / mean for count in accepted)
print(f"{conns_wanted} connections from {sources} source addresses over "
      f"{listeners_wanted} SO_REUSEPORT listeners in {elapsed:.1f} s: {accepted} "
      f"(largest deviation from the mean {spread:.2%})")
