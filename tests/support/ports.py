"""Free TCP ports on 127.0.0.1, for everything the tests, the demo and the bench start."""

import socket


def free_ports(count):
    """``count`` distinct free ports (held open together while chosen, so they differ).

    A port is free when this returns; something else may take it before the
    caller binds it. Nothing on this machine races for loopback ports often
    enough to matter, and every caller fails clearly if one is taken.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port():
    (port,) = free_ports(1)
    return port
