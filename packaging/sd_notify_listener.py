#!/usr/bin/env python3
"""Plays systemd's side of sd_notify for packaging/test.sh.

    sd_notify_listener.py SOCKET LOG SECONDS

Binds a datagram socket at SOCKET (mode 0666, so a service user can send),
appends each datagram to LOG as one line with its fields joined by '|'
(e.g. `RELOADING=1|MONOTONIC_USEC=123`), and exits after SECONDS or after the
datagram carrying STOPPING=1.
"""

import os
import socket
import sys
import time


def main() -> int:
    path, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o666)
    deadline = time.monotonic() + seconds
    with open(log, "a", buffering=1) as out:
        out.write("LISTENING\n")
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            fields = data.decode(errors="replace").strip().split("\n")
            out.write("|".join(fields) + "\n")
            if "STOPPING=1" in fields:
                break
    sock.close()
    os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
