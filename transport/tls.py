"""MQTT over TLS for firegrid's own sessions (settings.mqtt.tls).

    TlsStream(sock, ctx, host)   a socket-like stream: handshake(), sendall(), recv(), ...

The context is settings.ssl_context() (runtime/settings.py, which also checks the files
when the settings load).

Why not ssl.SSLSocket: firegrid's sessions read in their network thread while another
thread writes (ingest's PUBACKs after each commit, the dispatcher's pages), and OpenSSL
does not allow one connection to be read and written from two threads at once. Here
OpenSSL works on memory buffers (ssl.MemoryBIO) under one lock, held only while it
encrypts or decrypts, never while the socket waits; the socket itself stays a plain one,
read by one thread and written by one at a time, as before.

recv() returns all the plaintext the bytes received so far carry, so nothing decrypted is
left waiting inside OpenSSL while a caller select()s on the socket (alerts/publisher.py).
"""

from __future__ import annotations

import socket
import ssl
import threading

_RAW = 1 << 18      # ciphertext bytes per socket recv()


class TlsStream:
    """A TLS client connection over a connected socket, safe for one reader thread and
    writer threads at the same time (see the module's docstring). Errors are the socket's
    and ssl's own (ssl.SSLError is an OSError)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing,
                                 server_hostname=server_hostname)
        self._tls_lock = threading.Lock()    # the SSLObject and its two buffers
        self._closed = False    # the broker sent close_notify: the stream has ended
        # Whoever holds it sends what is in _outgoing: records leave in the order made.
        self._send_lock = threading.Lock()

    def handshake(self) -> None:
        """The TLS handshake, within the socket's timeout. A certificate the context does
        not trust raises ssl.SSLCertVerificationError."""
        while True:
            try:
                with self._tls_lock:
                    self._tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(_RAW)
                if not data:
                    raise ConnectionResetError("the broker closed the connection during the"
                                               " TLS handshake") from None
                with self._tls_lock:
                    self._incoming.write(data)

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            with self._tls_lock:
                self._tls.write(data)
                wire = self._outgoing.read()
            self._sock.sendall(wire)

    def recv(self, bufsize: int) -> bytes:
        """Plaintext: at least one byte, or b"" when the connection has ended. Waits (within
        the socket's timeout) while the bytes received so far carry none."""
        while True:
            data, answer = self._decrypt()
            if answer:
                try:
                    self._flush()   # e.g. a TLS 1.3 key update the broker asked for
                except OSError as exc:
                    # Not a quiet read (a TimeoutError would pass for one): the plaintext
                    # just decrypted cannot be handed back, so the stream is broken.
                    raise ConnectionAbortedError(f"TLS write failed while reading: {exc}"
                                                 ) from exc
            if data:
                return data
            if self._closed:
                return b""
            raw = self._sock.recv(max(bufsize, _RAW))
            if not raw:
                return b""
            with self._tls_lock:
                self._incoming.write(raw)

    def _decrypt(self) -> tuple[bytes, bool]:
        """All plaintext the buffered ciphertext carries, and whether reading made
        something to send back."""
        chunks = []
        with self._tls_lock:
            while True:
                try:
                    chunk = self._tls.read(_RAW)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:     # close_notify: what came before counts
                    self._closed = True
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks), self._outgoing.pending > 0

    def _flush(self) -> None:
        with self._send_lock:
            with self._tls_lock:
                wire = self._outgoing.read()
            if wire:
                self._sock.sendall(wire)

    # --- the socket underneath ------------------------------------------------------------

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()
