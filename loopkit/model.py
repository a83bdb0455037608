"""The looped transformer: one weight-tied block Φ iterated T times on a state h, with the
input's embedding e recalled into every iteration (docs/design.md, "The model").

    e = Embed(x);  h_0 = init(e);  h_{t+1} = Φ(h_t; e);  logits_t = Head(h_t)

Recall placement (none / standard / internal, op add / concat) and normalization placement
(pre / post / outer / peri) are switches of one `Block`, so every variant shares one code path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import POSITION_ALIASES, ModelConfig
from .layout import SEQUENCE, Layout

AXES_POSITIONS = ("axes", *POSITION_ALIASES)  # grid, board: the names axes had before tasks declared them


def make_norm(kind: str, width: int) -> nn.Module:
    return nn.RMSNorm(width) if kind == "rmsnorm" else nn.LayerNorm(width)


@dataclass
class LoopStart:
    """What `LoopedTransformer.start` builds before the first iteration: e, the pattern, h_0."""

    e: Tensor
    pattern: AttentionPattern
    h0: Tensor


@dataclass
class AttentionPattern:
    """Which keys each query may see and with what bias, built once per forward for a length.

    Global attention: `bias` is (heads or 1, L, L). Local attention (window > 0): queries are cut
    into chunks of `chunk` positions and each chunk attends to its own span plus `window`
    positions either side, so `bias` is (heads or 1, n_chunks, chunk, chunk + 2 * window) and the
    cost grows as L * (chunk + 2w) instead of L^2: what makes T = 500 iterations at length 512
    affordable on a CPU. Keys outside the sequence are zero padding, as in a convolution.
    """

    bias: Tensor | None
    window: int = 0
    chunk: int = 0
    # > 0: the positions are the cells of a side x side grid and the window is 2-D: each cell sees
    # the (2 window + 1)^2 cells around it, and `bias` is (heads, (2 window + 1)^2), one per offset
    side: int = 0


def relative_offsets(length: int, window: int, chunk: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Offsets j - i between every query i and the keys it is laid out against, and whether key j
    lies inside the sequence (the local layout pads it)."""
    if not window:
        pos = torch.arange(length, device=device)
        return pos[None, :] - pos[:, None], torch.ones(length, length, dtype=torch.bool, device=device)
    n = -(-length // chunk)
    q = torch.arange(n * chunk, device=device).view(n, chunk, 1)
    k = ((torch.arange(n, device=device) * chunk).view(n, 1, 1)
         + torch.arange(chunk + 2 * window, device=device) - window)
    return k - q, (k >= 0) & (k < length) & torch.ones_like(q, dtype=torch.bool)


class PositionBias(nn.Module):
    """A learned per-head attention bias on the relative offset j - i, clipped at max_distance: on a
    sequence the offset is one number, on a grid (a task whose layout is a grid) it is
    (Δrow, Δcol), each clipped.

    Why this scheme: it depends only on offsets, never on absolute positions, so a model trained on
    length 32 (or 9 x 9 cells) meets exactly the same attention pattern at length 512 (or 59 x 59):
    learned absolute positions have no embedding beyond the training size; RoPE meets rotation angles
    it never saw. With `window` it becomes a local operator, the transformer analogue of a conv
    kernel: each position's update is then independent of the input's size.
    """

    def __init__(self, cfg: ModelConfig, grid: bool = False):
        super().__init__()
        self.max_distance = d = cfg.window or cfg.max_distance
        self.grid = grid
        self.table = nn.Parameter(torch.zeros(cfg.heads, *((2 * d + 1,) * (2 if grid else 1))))
        if cfg.window:
            # Each head starts focused on one offset of the window (0, -1, +1, -2, ... cycling; on a
            # grid (0, 0), then up, down, left, right, ...), so that at initialisation the heads act
            # like the taps of a conv kernel; learning then only has to sharpen or move them, not
            # break the symmetry of a uniform average.
            steps = [o for r in range(cfg.window + 1) for o in ((0,) if r == 0 else (-r, r))
                     if not (cfg.causal and o > 0)]
            taps = ([(0, 0)] + [t for r in steps if r for t in ((r, 0), (0, r))]) if grid else [(o,) for o in steps]
            with torch.no_grad():
                for head in range(cfg.heads):
                    self.table[(head, *(o + d for o in taps[head % len(taps)]))] = 4.0

    def forward(self, *offsets: Tensor) -> Tensor:
        """Bias per head for offsets j - i (a sequence) or (Δrow, Δcol) (a grid): (heads, *shape)."""
        d = self.max_distance
        return self.table[(slice(None), *(o.clamp(-d, d) + d for o in offsets))]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.out = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, z: Tensor, pattern: AttentionPattern) -> Tensor:
        b, n, d = z.shape
        q, k, v = self.qkv(z).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if pattern.side:
            y = grid_local_attention(q, k, v, pattern)
        elif pattern.window:
            y = local_attention(q, k, v, pattern)
        else:
            y = attention(q, k, v, pattern.bias)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(q kᵀ / √d + bias) v on the fastest kernel for this device and dtype.

    SDPA's fused kernels everywhere except bf16/fp16 on a CPU: there the fused (flash) CPU kernel's
    backward is several times slower than two batched matmuls with the softmax in fp32, and slower
    than fp32 itself (benchmarks/README.md, "Attention kernels").
    """
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # scaling q is cheaper than scaling L x L scores
    scores = scores.float() if bias is None else scores + bias  # bias is fp32: the sum is too, in one pass
    # (a row masked entirely would give NaN here where SDPA gives 0; loopkit's patterns always let a
    # query see itself, so no row is)
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


def local_attention(q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern) -> Tensor:
    """Banded attention through SDPA on overlapping key windows (see AttentionPattern)."""
    b, h, length, dh = q.shape
    c, w = pattern.chunk, pattern.window
    n = -(-length // c)
    pad = n * c - length
    q = F.pad(q, (0, 0, 0, pad)).view(b, h, n, c, dh)
    if n == 1:  # one chunk (short sequences, e.g. training): padding alone, no unfold to backprop through
        k, v = (F.pad(t, (0, 0, w, w + pad)).unsqueeze(2) for t in (k, v))
    else:
        k, v = (F.pad(t, (0, 0, w, w + pad)).unfold(2, c + 2 * w, c).transpose(-1, -2) for t in (k, v))
    # SDPA's fused CPU kernel takes 4-D inputs only, so (heads, chunks) are merged into one dim:
    # 5-D inputs fall back to the unfused path, which is slower (benchmarks/README.md).
    mask = pattern.bias.expand(h, -1, -1, -1).flatten(0, 1).unsqueeze(0)
    y = attention(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), mask)
    return y.reshape(b, h, n * c, dh)[:, :, :length]


def grid_window_offsets(window: int) -> list[tuple[int, int]]:
    """The (Δrow, Δcol) a cell sees in a 2-D window, in the order of the bias's last dimension."""
    return [(dr, dc) for dr in range(-window, window + 1) for dc in range(-window, window + 1)]


def grid_local_attention(q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern) -> Tensor:
    """Attention over each cell's (2w + 1)^2 neighbourhood on a side x side grid, as a 2-D conv sees it.

    The keys and values are zero-padded by w on every side (a conv's zero padding: a cell at the
    border reads "nothing" beyond it, which is how the edge announces itself) and read at each
    offset by slicing, so the cost is (2w + 1)^2 dot products per cell: linear in the number of
    cells, with no keys computed that the window does not use. Softmax in fp32."""
    b, h, length, dh = q.shape
    n, w = pattern.side, pattern.window
    kg, vg = (F.pad(t.reshape(b, h, n, n, dh), (0, 0, w, w, w, w)) for t in (k, v))

    def at(t: Tensor, dr: int, dc: int) -> Tensor:
        return t[:, :, w + dr: w + dr + n, w + dc: w + dc + n].reshape(b, h, length, dh)

    offsets = grid_window_offsets(w)
    scores = torch.stack([(q * at(kg, dr, dc)).sum(-1) for dr, dc in offsets], -1)
    weights = torch.softmax(scores.float() * dh ** -0.5 + pattern.bias[:, None], dim=-1).to(v.dtype)
    return sum(weights[..., i, None] * at(vg, dr, dc) for i, (dr, dc) in enumerate(offsets))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = int(cfg.mlp_ratio * cfg.width)
        self.up = nn.Linear(cfg.width, hidden)
        self.down = nn.Linear(hidden, cfg.width)

    def forward(self, z: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(z)))


class Recall(nn.Module):
    """h ⊕ e: addition, or concatenation followed by a linear map back to the width."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(2 * cfg.width, cfg.width, bias=False) if cfg.recall_op == "concat" else None

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        return h + e if self.proj is None else self.proj(torch.cat([h, e], dim=-1))


class Layer(nn.Module):
    """One transformer layer (attention + MLP sublayers) with the chosen norm placement.

    `outer` uses pre-norm sublayers here; the outer norm itself is applied by `Block`.
    `recall_hook` (internal recall: z -> z + e, or its concat form) is applied to the residual stream
    between the two sublayers.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.placement = "pre" if cfg.norm == "outer" else cfg.norm
        self.attn, self.mlp = Attention(cfg), MLP(cfg)
        self.norm1, self.norm2 = make_norm(cfg.norm_type, cfg.width), make_norm(cfg.norm_type, cfg.width)
        if self.placement == "peri":
            self.norm1_out = make_norm(cfg.norm_type, cfg.width)
            self.norm2_out = make_norm(cfg.norm_type, cfg.width)

    def _sublayer(self, z: Tensor, fn, norm_in: nn.Module, norm_out: nn.Module | None) -> Tensor:
        if self.placement == "pre":
            return z + fn(norm_in(z))
        if self.placement == "post":
            return norm_in(z + fn(z))
        return z + norm_out(fn(norm_in(z)))  # peri (sandwich)

    def forward(self, z: Tensor, pattern: AttentionPattern, recall_hook=None) -> Tensor:
        peri = self.placement == "peri"
        z = self._sublayer(z, lambda u: self.attn(u, pattern), self.norm1, self.norm1_out if peri else None)
        if recall_hook is not None:
            z = recall_hook(z)
        return self._sublayer(z, self.mlp, self.norm2, self.norm2_out if peri else None)


class Block(nn.Module):
    """Φ(h; e): `layers` transformer layers with the recall placed as configured."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.recall_kind = cfg.recall
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.recall = Recall(cfg) if cfg.recall != "none" else None
        self.recall_mid = Recall(cfg) if cfg.recall == "both" else None  # "both": a second injection
        self.outer = make_norm(cfg.norm_type, cfg.width) if cfg.norm == "outer" else None

    def forward(self, h: Tensor, e: Tensor, pattern: AttentionPattern) -> Tensor:
        z, recall_hook = h, None
        if self.recall_kind in ("standard", "both"):
            z = self.recall(h, e)
        if self.recall_kind == "internal":
            recall_hook = lambda u: self.recall(u, e)  # noqa: E731 - injected once, inside the first layer
        elif self.recall_kind == "both":  # internal recall whose attention also sees e (issue 10's control)
            recall_hook = lambda u: self.recall_mid(u, e)  # noqa: E731
        for i, layer in enumerate(self.layers):
            z = layer(z, pattern, recall_hook if i == 0 else None)
        return self.outer(z) if self.outer is not None else z


@dataclass
class LoopOutput:
    logits: Tensor  # (B, L, C) from the final state
    state: Tensor  # (B, L, d) final state h_T
    all_logits: Tensor | None = None  # (T, B, L, C): logits after every iteration 1..T
    all_states: Tensor | None = None  # (T + 1, B, L, d): h_0 .. h_T


class LoopedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int, depth: int = 1,
                 layout: Layout = SEQUENCE):
        """`depth` is the number of blocks of an untied stack (cfg.tied=False); ignored when tied.
        `layout` is where the task's positions sit (`loopkit.layout`): the model reads it, never the task."""
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.width)
        self.abs_pos = nn.Parameter(torch.zeros(cfg.max_len, cfg.width)) if cfg.position == "learned" else None
        self.pos_bias = PositionBias(cfg, grid=layout.grid) if cfg.position == "relative" else None
        # position: axes -- one learned table per axis the task's layout declares (sudoku: row, column,
        # box; chess: rank, file, diagonal, anti-diagonal), rows padded to the largest axis; grid and
        # board are that scheme's names from before tasks declared their axes (same tensor, renamed)
        self.layout = layout
        self.axis_pos = None
        if cfg.position in AXES_POSITIONS:
            if not layout.axes:
                raise ValueError(f"model.position={cfg.position} embeds the axes a grid task declares, "
                                 "and this task declares none (use relative, learned or none)")
            self.axis_pos = nn.Parameter(0.5 * torch.randn(len(layout.axes), max(layout.axis_sizes), cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(1 if cfg.tied else depth))
        self.head_norm = make_norm(cfg.norm_type, cfg.width)
        self.head = nn.Linear(cfg.width, num_classes)
        self.apply(self._init)
        self.graph_outputs = False  # the block runs as a CUDA graph: its outputs are copied out (compile_blocks)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=1.0)

    # -- the pieces a fixed-point analysis needs -------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """The recall signal e = Embed(x) (+ absolute positions or the layout's axes when configured)."""
        e = self.embed(x)
        if self.abs_pos is not None:
            if x.shape[1] > self.abs_pos.shape[0]:
                raise ValueError(f"sequence length {x.shape[1]} exceeds model.max_len={self.abs_pos.shape[0]}")
            e = e + self.abs_pos[: x.shape[1]]
        if self.axis_pos is not None:
            coords = self.layout.coordinates(x.shape[1], x.device)
            for axis in range(coords.shape[0]):  # one add per axis, in the declared order
                e = e + self.axis_pos[axis, coords[axis]]
        return e

    def attention_pattern(self, length: int) -> AttentionPattern:
        """Attention bias and window for this length: built once per forward, shared by all iterations."""
        cfg = self.cfg
        if self.layout.grid and (cfg.window or self.pos_bias is not None):
            return self._grid_pattern(length)
        if not (cfg.window or cfg.causal or self.pos_bias is not None):
            return AttentionPattern(None)
        chunk = max(32, 4 * cfg.window) if cfg.window else 0
        offset, exists = relative_offsets(length, cfg.window, chunk, self.embed.weight.device)
        # Keys beyond the ends are zero vectors (k = v = 0), as a conv's zero padding: a head aimed
        # at offset -1 then reads "nothing" at position 0, which is how the edge announces itself.
        allowed = (offset.abs() <= cfg.window) if cfg.window else exists
        if cfg.causal:
            allowed &= offset <= 0
        bias = self.pos_bias(offset) if self.pos_bias is not None else torch.zeros_like(offset, dtype=torch.float)[None]
        return AttentionPattern(bias.masked_fill(~allowed, float("-inf")), cfg.window, chunk)

    def _grid_pattern(self, length: int) -> AttentionPattern:
        """A grid task's pattern: the 2-D window (`window` > 0), or global attention with a bias on
        the clipped (Δrow, Δcol) between every two cells."""
        cfg, device = self.cfg, self.embed.weight.device
        row, col = self.layout.rows_cols(length, device)
        if cfg.window:
            dr, dc = (torch.tensor(o, device=device) for o in zip(*grid_window_offsets(cfg.window)))
            bias = self.pos_bias(dr, dc) if self.pos_bias is not None else torch.zeros(1, len(dr), device=device)
            return AttentionPattern(bias, cfg.window, side=math.isqrt(length))
        return AttentionPattern(self.pos_bias(row[None, :] - row[:, None], col[None, :] - col[:, None]))

    def initial_state(self, e: Tensor, generator: torch.Generator | None = None) -> Tensor:
        kind = self.cfg.init_state
        if kind == "auto":
            kind = "input" if self.cfg.recall == "none" else "zeros"
        if kind == "input":
            return e
        if kind == "zeros":
            return torch.zeros_like(e)
        noise = torch.randn(e.shape, generator=generator, device=e.device if generator is None else generator.device)
        return noise.to(e)

    def compile_blocks(self, mode: str) -> None:
        """torch.compile every block in place (parameter names, hence checkpoints, stay as they are).
        Under `reduce-overhead` each block call replays a CUDA graph whose output lives in the graph's
        memory pool, where the next replay writes again: the loop feeds h_t into the next replay, and
        the progressive loss keeps states across the no-grad / grad boundary, so a state still needed
        would be overwritten (the first CUDA run crashed on it). Each output is therefore copied out,
        one (B, L, d) copy per iteration; on an H200 the compiled step was still 1.26x eager's
        (benchmarks/cudagraph_train.py)."""
        for block in self.blocks:
            block.compile(mode=mode)
        self.graph_outputs = mode in ("reduce-overhead", "max-autotune")  # both replay CUDA graphs

    def step(self, h: Tensor, e: Tensor, pattern: AttentionPattern, t: int = 0) -> Tensor:
        """One iteration Φ(h; e). `t` picks the block of an untied stack."""
        block = self.blocks[0] if self.cfg.tied else self.blocks[t]
        out = block(h, e, pattern)
        return out.clone() if self.graph_outputs else out

    def fixed_point_map(self, x: Tensor) -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
        """(f, e, h_0) with f(h, e) = Φ(h; e) at this input's length: the map `loopkit.fixedpoint`
        analyses and implicit differentiation solves, without knowing it is a transformer."""
        if not self.cfg.tied:
            raise ValueError("an untied stack applies a different block at every depth: it has no fixed-point map")
        s = self.start(x)

        def f(h: Tensor, e: Tensor) -> Tensor:
            return self.step(h, e, s.pattern)

        return f, s.e, s.h0

    def readout(self, h: Tensor) -> Tensor:
        return self.head(self.head_norm(h))

    # -- running the loop -------------------------------------------------------------------
    def start(self, x: Tensor, h0: Tensor | None = None) -> LoopStart:
        """Everything the loop needs before its first iteration (encode -> attention pattern ->
        h_0), built in this one place for training, evaluation, early exit and the analyses."""
        e = self.encode(x)
        return LoopStart(e, self.attention_pattern(x.shape[1]), self.initial_state(e) if h0 is None else h0)

    def iterate(self, s: LoopStart, iters: int, h: Tensor | None = None, first: int = 0) -> Iterator[Tensor]:
        """The loop itself: yield h_{first+1} .. h_{first+iters}, starting from `h` (default h_0).
        Every caller runs its iterations through here; under `torch.no_grad()` it builds no graph."""
        h = s.h0 if h is None else h
        for t in range(first, first + iters):
            h = self.step(h, s.e, s.pattern, t)
            yield h

    def trajectory(self, x: Tensor | LoopStart, max_iters: int, h0: Tensor | None = None) -> Iterator[Tensor]:
        """Yield h_1 .. h_max_iters one at a time: evaluation at every T in a single pass, in O(1) memory.
        `x` may be a `start(...)` already built, when the caller also needs its e or h_0."""
        self._check_iters(max_iters)
        yield from self.iterate(x if isinstance(x, LoopStart) else self.start(x, h0), max_iters)

    def forward(
        self,
        x: Tensor,
        max_iters: int,
        *,
        grad_iters: int | None = None,
        h0: Tensor | None = None,
        return_all: bool = False,
    ) -> LoopOutput:
        """Run all `max_iters` iterations (the early-exit runners stop sooner). Only the last
        `grad_iters` are recorded for backprop: the earlier ones run under `torch.no_grad()` (no graph
        is built, so memory stays flat)."""
        self._check_iters(max_iters)
        grad_iters = max_iters if grad_iters is None else min(grad_iters, max_iters)
        s = self.start(x, h0)
        h = s.h0
        states = [h] if return_all else None
        with torch.no_grad():
            for h in self.iterate(s, max_iters - grad_iters):  # from h_0
                if return_all:
                    states.append(h)
        h_cut = h  # the last state without a graph: the recorded iterations start from it
        for h in self.iterate(s, grad_iters, h_cut, first=max_iters - grad_iters):
            if return_all:
                states.append(h)
        out = LoopOutput(logits=self.readout(h), state=h)
        if return_all:
            out.all_states = torch.stack(states)
            out.all_logits = self.readout(out.all_states[1:])
        return out

    def _check_iters(self, iters: int) -> None:
        if not self.cfg.tied and iters != len(self.blocks):
            raise ValueError(f"an untied stack has exactly {len(self.blocks)} blocks; cannot run {iters} iterations")
        if iters < 1:
            raise ValueError(f"iterations must be >= 1, got {iters}")
