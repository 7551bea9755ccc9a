"""Incremental decoding of an HTTP/1.1 chunked body, for the raw-socket clients and the floor relay."""

from __future__ import annotations


class Dechunker:
    """Feed it the body's bytes as they arrive; it returns the payload they complete."""

    def __init__(self) -> None:
        self.buf = b""
        self.left = 0  # payload bytes of the current chunk still to come
        self.crlf = False  # the CRLF after a chunk's payload is still to come
        self.eof = False  # the last (empty) chunk was seen

    def feed(self, data: bytes) -> bytes:
        buf, out = self.buf + data, []
        while not self.eof:
            if self.left:
                take = buf[: self.left]
                out.append(take)
                buf = buf[len(take) :]
                self.left -= len(take)
                if self.left:
                    break
                self.crlf = True
            if self.crlf:
                if len(buf) < 2:
                    break
                buf, self.crlf = buf[2:], False
            end = buf.find(b"\r\n")
            if end < 0:
                break
            size = int(buf[:end].split(b";")[0], 16)
            buf = buf[end + 2 :]
            if size == 0:
                self.eof = True
            self.left = size
        self.buf = buf
        return b"".join(out)
