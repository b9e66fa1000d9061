"""First CNN block (Conv3d 3→F, k=3, pad 1 → ReLU → MaxPool3d 4) computed from occupied voxels.

A voxel image is ~99 % empty. Every conv output farther than one voxel from an occupied voxel
equals the bias, so each pooled cell is the max of ReLU(bias) (if the cell has any unaffected
position) and the ReLU'd conv outputs at the affected positions. We compute only those,
one x-slab of the grid at a time (a 128×128 scratch map that stays in cache), and never build
the F×128³ activation (268 MB per image).

Speed: an image has only a handful of distinct channel-value rows (one per element), so the
contribution of a voxel to each of the 27 positions it affects is looked up from a small
(U, 27, F) table (``contrib[u, k] = W_k · v_u``, in L1) instead of 3·F multiply-adds; the F
filters are the innermost, contiguous axis everywhere (SIMD); the winner of each pooled max is
tracked only when a gradient is needed (an int8 index inside the 4³ cell), and the backward
pass sums the upstream gradient per (value row, kernel offset) — weight gradients follow with
one small product at the end.

The result equals the dense ``conv3d → relu → max_pool3d`` path (tested to 1e-5 against float64 in outputs and
gradients). Ties between equal affected outputs in a pooling window go to the first position in
scan order, as in PyTorch's max_pool3d; an affected output exactly equal to the background
value is treated as the background (a measure-zero event that changes no gradient of interest).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from numba import njit, prange

GRID = 128
POOL = 4
CELLS = GRID // POOL  # 32 pooled cells per edge
ROW = CELLS * CELLS  # pooled cells in one x-row of cells
NO_GRAD = -2  # winner code of a cell whose max is 0: ReLU passes no gradient there
BACKGROUND = -1  # winner code of a cell whose max is ReLU(bias) at an unaffected position

# numba note: the kernels index arrays directly (a[i, j, f]) instead of taking row views
# (row = a[i]); views cost ~2× in these loops. A slab keeps its affected positions in
# first-touch order (compact rows of ``val``, found through ``slot``) for cache locality.


def _forward(ijk, codes, starts, contrib, bias, out, win, track):  # pragma: no cover - compiled
    """ijk (P,3) int32 sorted per image; codes (P,) int32 value row of each voxel; starts (B+1,);
    contrib (U,27,F) f32 = W_k · v_u; bias (F,); out (B, CELLS³, F) f32 result; win (B, CELLS³, F)
    int8: the winning position inside the 4³ cell ((sx·4 + sy)·4 + sz), BACKGROUND or NO_GRAD;
    written only when ``track``."""
    n_img = starts.shape[0] - 1
    nf = bias.shape[0]
    relu_b = np.maximum(bias, np.float32(0.0))
    for im in prange(n_img):
        s0, s1 = starts[im], starts[im + 1]
        slot = np.full(GRID * GRID, -1, np.int32)
        val = np.empty((GRID * GRID, nf), np.float32)
        touched = np.empty(GRID * GRID, np.int32)
        count = np.zeros(ROW, np.int32)  # affected positions per cell of this pooled row
        orow = np.empty((ROW, nf), np.float32)
        wrow = np.empty((ROW, nf), np.int32)
        lo = s0  # first voxel with i_x >= X - 1
        for X in range(GRID):
            sx = X % POOL
            if sx == 0:
                count[:] = 0
                orow[:] = -1.0
                wrow[:] = BACKGROUND
            while lo < s1 and ijk[lo, 0] < X - 1:
                lo += 1
            n_t = 0
            a = lo
            while a < s1 and ijk[a, 0] <= X + 1:
                kx = (ijk[a, 0] - X + 1) * 9
                u = codes[a]
                for dy in range(-1, 2):
                    py = ijk[a, 1] - dy
                    if py < 0 or py >= GRID:
                        continue
                    for dz in range(-1, 2):
                        pz = ijk[a, 2] - dz
                        if pz < 0 or pz >= GRID:
                            continue
                        p = py * GRID + pz
                        k = kx + (dy + 1) * 3 + (dz + 1)
                        q = slot[p]
                        if q >= 0:
                            for f in range(nf):
                                val[q, f] += contrib[u, k, f]
                        else:
                            slot[p] = n_t
                            touched[n_t] = p
                            for f in range(nf):
                                val[n_t, f] = bias[f] + contrib[u, k, f]
                            n_t += 1
                a += 1
            # fold this slab into the pooled row
            if track:
                # equal values go to the smaller index in the cell, i.e. the first position in
                # scan order, as PyTorch's max_pool3d does
                for t in range(n_t):
                    p = touched[t]
                    py, pz = p // GRID, p % GRID
                    c = (py // POOL) * CELLS + pz // POOL
                    loc = (sx * POOL + py % POOL) * POOL + pz % POOL
                    count[c] += 1
                    for f in range(nf):
                        r = max(val[t, f], np.float32(0.0))
                        o_ = orow[c, f]
                        w_ = wrow[c, f]
                        take = (r > o_) | ((r == o_) & (loc < w_))
                        orow[c, f] = r if take else o_
                        wrow[c, f] = loc if take else w_
                    slot[p] = -1
            else:
                for t in range(n_t):
                    p = touched[t]
                    py, pz = p // GRID, p % GRID
                    c = (py // POOL) * CELLS + pz // POOL
                    count[c] += 1
                    for f in range(nf):
                        orow[c, f] = max(orow[c, f], val[t, f])
                    slot[p] = -1
            if sx == POOL - 1:
                base = (X // POOL) * ROW
                for c in range(ROW):
                    full = count[c] == POOL * POOL * POOL
                    if track:
                        for f in range(nf):
                            o_ = orow[c, f]
                            bg = (not full) & (relu_b[f] >= o_)
                            o_ = relu_b[f] if bg else o_
                            out[im, base + c, f] = o_
                            w_ = BACKGROUND if bg else wrow[c, f]
                            win[im, base + c, f] = NO_GRAD if o_ <= 0.0 else w_
                    else:
                        for f in range(nf):
                            o_ = max(orow[c, f], np.float32(0.0))
                            out[im, base + c, f] = o_ if full else max(o_, relu_b[f])


def _backward(ijk, codes, starts, grad, win, g_u, g_b):  # pragma: no cover - compiled
    """Per-image sums of the upstream gradient grad (B, CELLS³, F): g_u (B, U, 27, F) float64 over
    the (value row, kernel offset) of every winning affected position, g_b (B, F) float64 over
    every cell whose max is positive (the bias gradient)."""
    n_img = starts.shape[0] - 1
    nf = grad.shape[2]
    for im in prange(n_img):
        for c in range(CELLS * ROW):
            for f in range(nf):
                g_b[im, f] += grad[im, c, f] if win[im, c, f] != NO_GRAD else 0.0
        s0, s1 = starts[im], starts[im + 1]
        lo = s0
        for X in range(GRID):
            sx = X % POOL
            base = (X // POOL) * ROW
            while lo < s1 and ijk[lo, 0] < X - 1:
                lo += 1
            a = lo
            while a < s1 and ijk[a, 0] <= X + 1:
                kx = (ijk[a, 0] - X + 1) * 9
                u = codes[a]
                for dy in range(-1, 2):
                    py = ijk[a, 1] - dy
                    if py < 0 or py >= GRID:
                        continue
                    for dz in range(-1, 2):
                        pz = ijk[a, 2] - dz
                        if pz < 0 or pz >= GRID:
                            continue
                        cell = base + (py // POOL) * CELLS + pz // POOL
                        loc = (sx * POOL + py % POOL) * POOL + pz % POOL
                        k = kx + (dy + 1) * 3 + (dz + 1)
                        for f in range(nf):
                            g_u[im, u, k, f] += grad[im, cell, f] if win[im, cell, f] == loc else np.float32(0.0)
                a += 1


# a single image runs serially: waking a thread pool for it costs more than it saves; so does a
# forked child (numba's OpenMP layer, GNU libgomp, is not fork-safe once the parent used it)
_IMPORT_PID = os.getpid()
_forward_serial = njit(cache=True, nogil=True, fastmath=True)(_forward)
_forward_parallel = njit(cache=True, nogil=True, parallel=True, fastmath=True)(_forward)
_backward_serial = njit(cache=True, nogil=True, fastmath=True)(_backward)
_backward_parallel = njit(cache=True, nogil=True, parallel=True, fastmath=True)(_backward)


def value_codes(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes (P,) int32, table (U, C) float32) with ``table[codes] == vals`` (distinct rows)."""
    vals = np.ascontiguousarray(vals, dtype=np.float32)
    if len(vals) == 0:
        return np.zeros(0, np.int32), np.zeros((0, vals.shape[1]), np.float32)
    table, codes = np.unique(vals, axis=0, return_inverse=True)
    return codes.reshape(-1).astype(np.int32), np.ascontiguousarray(table, dtype=np.float32)


class SparseFirstBlock(torch.autograd.Function):
    """Autograd wrapper: gradients flow to the conv weight and bias (inputs are data)."""

    @staticmethod
    def forward(ctx, ijk, codes, table, starts, weight, bias, track):
        n_img = starts.shape[0] - 1
        nf = weight.shape[0]
        c_in = weight.shape[1]
        w_k = weight.detach().float().permute(2, 3, 4, 1, 0).reshape(27, c_in, nf)  # (k, c, f)
        table_t = table.float()
        contrib = torch.einsum("uc,kcf->ukf", table_t.double(), w_k.double()).float().contiguous()
        b_np = np.ascontiguousarray(bias.detach().float().numpy())
        out = np.empty((n_img, CELLS**3, nf), np.float32)
        win = np.empty((n_img, CELLS**3, nf) if track else (0, 0, 0), np.int8)
        if n_img:
            kernel = _forward_parallel if n_img > 1 and os.getpid() == _IMPORT_PID else _forward_serial
            kernel(ijk.numpy(), codes.numpy(), starts.numpy(), contrib.numpy(), b_np, out, win, bool(track))
        if track:
            ctx.save_for_backward(ijk, codes, table, starts, bias)
            ctx.win = win
        out_t = torch.from_numpy(out).view(n_img, CELLS, CELLS, CELLS, nf)
        return out_t.permute(0, 4, 1, 2, 3)  # (B, F, 32, 32, 32), channels-last in memory

    @staticmethod
    def backward(ctx, grad_out):
        if not hasattr(ctx, "win"):
            raise RuntimeError("sparse_first_block ran without gradient tracking (track=False)")
        ijk, codes, table, starts, bias = ctx.saved_tensors
        win = ctx.win
        n_img, nf = win.shape[0], win.shape[2]
        grad = grad_out.float().permute(0, 2, 3, 4, 1).contiguous().view(n_img, CELLS**3, nf).numpy()
        n_u = table.shape[0]
        # float64 accumulators: a bias gradient sums 32³ cells per image
        g_u = np.zeros((n_img, n_u, 27, nf), np.float64)
        g_b = np.zeros((n_img, nf), np.float64)
        if n_img:
            kernel = _backward_parallel if n_img > 1 and os.getpid() == _IMPORT_PID else _backward_serial
            kernel(ijk.numpy(), codes.numpy(), starts.numpy(), grad, win, g_u, g_b)
        # sum per-image partials in a fixed order: deterministic whatever the thread count
        gw = np.einsum("uc,ukf->kcf", table.numpy().astype(np.float64), g_u.sum(axis=0))
        c_in = table.shape[1]
        gw_t = torch.from_numpy(gw.astype(np.float32)).view(3, 3, 3, c_in, nf).permute(4, 3, 0, 1, 2).contiguous()
        gb_t = torch.from_numpy(g_b.sum(axis=0).astype(np.float32))
        return None, None, None, None, gw_t.to(bias.dtype), gb_t.to(bias.dtype), None


def sparse_first_block(ijk: torch.Tensor, vals: torch.Tensor | None, starts: torch.Tensor,
                       weight: torch.Tensor, bias: torch.Tensor, codes: torch.Tensor | None = None,
                       table: torch.Tensor | None = None) -> torch.Tensor:
    """Block 1 of the voxel CNN on a batch of sparse images.

    ``ijk`` (P, 3) int32 voxel indices, each image's rows sorted lexicographically; ``vals``
    (P, C) float32 channel values; ``starts`` (B+1,) int64 row offsets of the images.
    ``codes`` (P,) int32 and ``table`` (U, C) float32 with ``table[codes] == vals`` may be given
    instead of ``vals`` (``SparseBatch`` has them; otherwise they are found with ``np.unique``).
    Returns (B, F, 32, 32, 32) float32. Winners of the max-pool are recorded (for the backward
    pass) only when autograd is on and the weight or bias needs a gradient.
    """
    if codes is None or table is None:
        c_np, t_np = value_codes(vals.numpy())
        codes, table = torch.from_numpy(c_np), torch.from_numpy(t_np)
    track = torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad)
    return SparseFirstBlock.apply(ijk, codes, table, starts, weight, bias, track)
