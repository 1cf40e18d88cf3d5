"""A TCP proxy that can black-hole its traffic: connections stay open, nothing gets through.

This is what a dead network path or a host that vanished looks like to a client: no RST, no
reply, no error; only a client-side time-out notices. ``restore()`` closes the connections
that were black-holed (their streams are broken) and lets new ones through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class BlackholeProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def blackhole(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        with self.lock:
            old, self.sockets = self.sockets, []
        for sock in old:
            with contextlib.suppress(OSError):
                sock.close()
        self.flowing.set()

    def close(self) -> None:
        self.stopped = True
        self.restore()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if not self.flowing.is_set():
                continue  # swallowed: a black hole
            try:
                sink.sendall(data)
            except OSError:
                return
