"""A layer as it travels to and from the engine server: received in bands, sent back in bands.

The server never holds the request or the result as a whole float copy: each
band of wire pixels is turned, as it arrives, into the rows of the one float
RGB image the edit session works on (clipped to the displayable [0, 1]),
keeping beside it only what the result needs back: the alpha channel and the
selection mask in their wire types, and, for float layers, the part of each
value outside [0, 1]. The result is rebuilt band by band from the session's
output and these, converted to the wire type and sent.

Float and linear layers (HDR): the network restores the displayable range;
what lies outside it is carried through unchanged, ``out = restored(clip(x)) +
(x - clip(x))``, so a value of 25 comes back as 24 plus the restored highlight
(about 25), a negative value keeps its offset below black, and a pixel the
selection leaves alone comes back bit for bit. Only bands that hold such
values keep an excess array.

Gray layers go through the network as three equal channels and come back as
the Rec. 709 luma of the result; alpha is never changed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.serve.protocol import DTYPE_SIZES

_NP = {"u8": np.dtype("u1"), "u16": np.dtype("<u2"), "f32": np.dtype("<f4")}
_SCALE = {"u8": 255.0, "u16": 65535.0}
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
#: Bytes per pixel the edit session and the network's input/output hold besides the float RGB itself:
#: the step's correction, the rendered result, and the restorer's output while it runs (float32 RGB each).
SESSION_BYTES_PER_PIXEL = 3 * 12


def _to_float(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32":
        return a.astype(np.float32)
    out = a.astype(np.float32)
    out /= np.float32(_SCALE[dtype])
    return out


def _to_wire(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32":
        return a.astype(_NP["f32"], copy=False)
    q = np.clip(a, 0.0, 1.0)
    q *= np.float32(_SCALE[dtype])
    np.rint(q, out=q)
    return q.astype(_NP[dtype])


class WireLayer:
    """The pixels of one restore request, as the server keeps them between receiving and answering."""

    def __init__(self, width: int, height: int, channels: int, dtype: str, mask_dtype: str | None = None) -> None:
        self.width, self.height, self.channels, self.dtype = int(width), int(height), int(channels), dtype
        self.mask_dtype = mask_dtype
        self.colour = 3 if self.channels >= 3 else 1
        self.rgb: np.ndarray | None = np.empty((self.height, self.width, 3), np.float32)
        self.alpha = np.empty((self.height, self.width), _NP[dtype]) if self.channels in (2, 4) else None
        self.mask = np.empty((self.height, self.width), _NP[mask_dtype]) if mask_dtype else None
        self.excess: dict[int, np.ndarray] = {}  # band start row -> float32 (rows, width, colour)
        self.received = 0

    @staticmethod
    def estimate_bytes(width: int, height: int, channels: int, dtype: str, mask_dtype: str | None = None) -> int:
        """What the server holds for a request of this size: this layer, the session and the result rows."""
        px = int(width) * int(height)
        side = (DTYPE_SIZES[dtype] if channels in (2, 4) else 0) + (DTYPE_SIZES[mask_dtype] if mask_dtype else 0)
        return px * (12 + side + SESSION_BYTES_PER_PIXEL)

    @property
    def row_bytes(self) -> int:
        return self.width * self.channels * DTYPE_SIZES[self.dtype]

    @property
    def mask_row_bytes(self) -> int:
        return self.width * DTYPE_SIZES[self.mask_dtype] if self.mask_dtype else 0

    # --- receiving ------------------------------------------------------------

    def put_rows(self, y: int, rows: int, data) -> None:
        """Take ``rows`` rows starting at ``y``: pixels, then mask rows when there is a mask."""
        if y != self.received or rows < 1 or y + rows > self.height:
            raise ValueError(f"rows {y}..{y + rows} out of order (expected from {self.received})")
        n_pix = rows * self.row_bytes
        pix = np.frombuffer(data, _NP[self.dtype], count=rows * self.width * self.channels).reshape(
            rows, self.width, self.channels)
        colour = _to_float(pix[..., : self.colour], self.dtype)
        if self.dtype == "f32":
            shown = np.nan_to_num(np.clip(colour, 0.0, 1.0), nan=0.0)
            if not np.array_equal(shown, colour):
                self.excess[y] = colour - shown  # NaN and +-inf survive as they came
            colour = shown
        self.rgb[y:y + rows] = colour  # a gray channel broadcasts to three
        if self.alpha is not None:
            self.alpha[y:y + rows] = pix[..., -1]
        if self.mask is not None:
            self.mask[y:y + rows] = np.frombuffer(data, _NP[self.mask_dtype], count=rows * self.width,
                                                  offset=n_pix).reshape(rows, self.width)
        self.received += rows

    @property
    def complete(self) -> bool:
        return self.received == self.height

    def take_rgb(self) -> np.ndarray:
        """The float RGB for the edit session; the layer lets go of it (the session's ``original`` is kept)."""
        rgb, self.rgb = self.rgb, None
        return rgb

    # --- answering ------------------------------------------------------------

    def result_size(self, result: np.ndarray) -> tuple[int, int]:
        return int(result.shape[1]), int(result.shape[0])

    def result_rows(self, result: np.ndarray, source: np.ndarray, y: int, rows: int) -> memoryview:
        """Rows ``y..y+rows`` of the answer in the wire type, from the session's ``result`` and its ``source``.

        Same size: blended with the mask (pixels it leaves out come back exactly), gray as luma, the
        excess of float values added back, alpha as it came. A larger result (an up-sampling step) is
        not blended; alpha and the excess are enlarged with it.
        """
        out_h, out_w = result.shape[:2]
        r = result[y:y + rows]
        same = (out_h, out_w) == (self.height, self.width)
        if self.colour == 1:
            r = (r @ LUMA)[..., None]
        if same:
            src = source[y:y + rows, :, : self.colour]
            if self.mask is not None:
                m = np.clip(_to_float(self.mask[y:y + rows], self.mask_dtype), 0.0, 1.0)[..., None]
                r = np.where(m > 0, src + m * (r - src), src)
        excess = self._excess_rows(y, rows, out_h, out_w)
        if excess is not None:
            r = r + excess
        out = np.empty((rows, out_w, self.channels), _NP[self.dtype])
        out[..., : self.colour] = _to_wire(np.asarray(r, np.float32), self.dtype)
        if self.alpha is not None:
            out[..., -1] = self._alpha_rows(y, rows, out_h, out_w)
        return memoryview(out).cast("B")

    def _excess_rows(self, y: int, rows: int, out_h: int, out_w: int) -> np.ndarray | None:
        if not self.excess:
            return None
        if (out_h, out_w) == (self.height, self.width):
            if y in self.excess and self.excess[y].shape[0] == rows:
                return self.excess[y]
            band = np.zeros((rows, self.width, self.colour), np.float32)
            for y0, ex in self.excess.items():
                a, b = max(y, y0), min(y + rows, y0 + ex.shape[0])
                if a < b:
                    band[a - y:b - y] = ex[a - y0:b - y0]
            return band
        return self._enlarged("_big_excess", self._dense_excess, out_h, out_w)[y:y + rows]

    def _dense_excess(self) -> np.ndarray:
        dense = np.zeros((self.height, self.width, self.colour), np.float32)
        for y0, ex in self.excess.items():
            dense[y0:y0 + ex.shape[0]] = np.nan_to_num(ex, nan=0.0)
        return dense

    def _alpha_rows(self, y: int, rows: int, out_h: int, out_w: int) -> np.ndarray:
        if (out_h, out_w) == (self.height, self.width):
            return self.alpha[y:y + rows]
        big = self._enlarged("_big_alpha", lambda: _to_float(self.alpha, self.dtype)[..., None], out_h, out_w)
        return _to_wire(np.clip(big[y:y + rows, :, 0], 0.0, 1.0) if self.dtype != "f32" else big[y:y + rows, :, 0],
                        self.dtype)

    def _enlarged(self, attr: str, make, out_h: int, out_w: int) -> np.ndarray:
        """Alpha or excess resampled once to the result's size (the up-sampling step's resample)."""
        cached = getattr(self, attr, None)
        if cached is None:
            src = make()
            cached = np.empty((out_h, out_w, src.shape[2]), np.float32)
            for c in range(src.shape[2]):  # float resampling, no clipping: the excess lies outside [0, 1]
                band = Image.fromarray(np.ascontiguousarray(src[..., c], dtype=np.float32), mode="F")
                cached[..., c] = np.asarray(band.resize((out_w, out_h), Image.Resampling.BICUBIC), np.float32)
            setattr(self, attr, cached)
        return cached
