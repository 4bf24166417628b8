"""Small images in pure Python: real CPU work for the demo's thumbnail jobs, with no dependency.

A source picture is computed from a seed (the same seed always gives the same
pixels), shrunk with a box filter, and written as a standard PNG that any image
viewer opens.
"""

from __future__ import annotations

import struct
import zlib

Pixels = list[bytearray]
"""Rows of packed RGB bytes, top to bottom."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render(seed: int, width: int, height: int) -> Pixels:
    """A deterministic picture: two gradients, a ring, and seeded grain."""
    state = (seed * 2654435761 + 1) & 0xFFFFFFFF
    cx, cy = (seed * 7919) % width, (seed * 104729) % height
    radius = min(width, height) // 3 + seed % 7
    hue = seed % 3
    rows: Pixels = []
    for y in range(height):
        row = bytearray(width * 3)
        for x in range(width):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF
            grain = (state >> 16) & 0x1F
            dx, dy = x - cx, y - cy
            ring = 120 if abs(dx * dx + dy * dy - radius * radius) < 4 * radius else 0
            channels = [
                min(255, x * 255 // width + grain),
                min(255, y * 255 // height + grain),
                min(255, ring + grain * 3),
            ]
            i = 3 * x
            row[i] = channels[hue]
            row[i + 1] = channels[(hue + 1) % 3]
            row[i + 2] = channels[(hue + 2) % 3]
        rows.append(row)
    return rows


def downscale(pixels: Pixels, factor: int) -> Pixels:
    """Shrink by an integer `factor`, each output pixel the mean of a factor x factor box."""
    if factor < 1:
        raise ValueError("factor must be at least 1")
    height, width = len(pixels) // factor, len(pixels[0]) // 3 // factor
    area = factor * factor
    out: Pixels = []
    for oy in range(height):
        box_rows = pixels[oy * factor : (oy + 1) * factor]
        row = bytearray(width * 3)
        for ox in range(width):
            for channel in range(3):
                start = ox * factor * 3 + channel
                stop = start + factor * 3
                total = sum(sum(src[start:stop:3]) for src in box_rows)
                row[ox * 3 + channel] = total // area
        out.append(row)
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: Pixels) -> bytes:
    """An 8-bit RGB PNG: no filtering (filter byte 0 on each row), zlib-compressed."""
    height, width = len(pixels), len(pixels[0]) // 3
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )
