import itertools

import pytest
import torch
import torch.nn.functional as F

from loopkit.config import ModelConfig
from loopkit.layout import Layout
from loopkit.model import AttentionPattern, LoopedTransformer, grid_local_attention

RECALLS, NORMS, OPS = ("none", "standard", "internal", "both"), ("pre", "post", "outer", "peri"), ("add", "concat")


def make(vocab=5, classes=3, depth=1, **kw):
    torch.manual_seed(0)
    return LoopedTransformer(ModelConfig(width=32, heads=4, **kw), vocab, classes, depth=depth)


@pytest.mark.parametrize("recall,norm,op", list(itertools.product(RECALLS, NORMS, OPS)))
@pytest.mark.parametrize("iters", [1, 5])
def test_every_variant_runs_forward_and_backward(recall, norm, op, iters):
    model = make(recall=recall, norm=norm, recall_op=op, window=2)
    x = torch.randint(0, 5, (3, 11))
    out = model(x, iters)
    assert out.logits.shape == (3, 11, 3) and torch.isfinite(out.logits).all()
    out.logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", [dict(layers=2), dict(norm_type="layernorm"), dict(position="learned"),
                                dict(position="none", causal=True), dict(window=0, max_distance=3)])
def test_other_switches_run(kw):
    model = make(**kw)
    out = model(torch.randint(0, 5, (2, 9)), 3)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("recall", ["standard", "internal", "both"])
@pytest.mark.parametrize("op", OPS)
def test_recall_makes_every_iteration_depend_on_the_input(recall, op):
    model = make(recall=recall, recall_op=op)
    x1 = torch.randint(0, 5, (2, 8))
    x2 = (x1 + 1) % 5
    h0 = torch.randn(2, 8, 32)
    assert not torch.allclose(model(x1, 4, h0=h0).logits, model(x2, 4, h0=h0).logits)


def test_without_recall_the_input_acts_only_through_the_initial_state():
    model = make(recall="none")
    x1 = torch.randint(0, 5, (2, 8))
    x2 = (x1 + 1) % 5
    h0 = torch.randn(2, 8, 32)
    torch.testing.assert_close(model(x1, 4, h0=h0).logits, model(x2, 4, h0=h0).logits)
    assert not torch.allclose(model(x1, 4).logits, model(x2, 4).logits)  # h_0 = e carries it


def test_all_states_and_trajectory_agree_with_forward():
    model = make(window=1)
    x = torch.randint(0, 5, (2, 7))
    out = model(x, 6, return_all=True)
    assert out.all_states.shape == (7, 2, 7, 32) and out.all_logits.shape == (6, 2, 7, 3)
    for t in range(1, 7):
        torch.testing.assert_close(out.all_logits[t - 1], model(x, t).logits)
    for t, h in enumerate(model.trajectory(x, 6)):
        torch.testing.assert_close(h, out.all_states[t + 1])


def test_grad_iters_runs_the_first_iterations_without_a_graph():
    model = make()
    x = torch.randint(0, 5, (2, 6))
    out = model(x, 5, grad_iters=2)
    out.logits.sum().backward()
    g_partial = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.no_grad():
        h3 = model(x, 3).state
    model(x, 2, h0=h3.clone()).logits.sum().backward()  # same as starting from the detached h_3
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_partial[n], p.grad)


def reference_local_attention(q, k, v, bias_fn, window, causal):
    """Dense attention on a zero-padded sequence: the definition the chunked path must match."""
    b, h, length, dh = q.shape
    kp, vp = F.pad(k, (0, 0, window, window)), F.pad(v, (0, 0, window, window))
    i = torch.arange(length)[:, None]
    j = torch.arange(length + 2 * window)[None, :] - window
    off = j - i
    allowed = off.abs() <= window
    if causal:
        allowed &= off <= 0
    bias = bias_fn(off).masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q, kp, vp, attn_mask=bias)


@pytest.mark.parametrize("length", [1, 5, 32, 33, 100])
@pytest.mark.parametrize("causal", [False, True])
def test_chunked_local_attention_matches_dense_reference(length, causal):
    from loopkit.model import local_attention

    model = make(window=3, causal=causal)
    with torch.no_grad():
        model.pos_bias.table.normal_()
    q, k, v = torch.randn(3, 2, 4, length, 8).unbind(0)
    pattern = model.attention_pattern(length)
    got = local_attention(q, k, v, pattern)
    want = reference_local_attention(q, k, v, model.pos_bias, 3, causal)
    torch.testing.assert_close(got, want)


def test_relative_positions_make_the_step_translation_equivariant_away_from_edges():
    """Same bits at a shifted place give the same local update: nothing depends on absolute
    position, which is what lets a model trained on 32 bits run on 512."""
    model = make(vocab=2, window=2)
    x = torch.randint(0, 2, (1, 40))
    shifted = torch.cat([torch.randint(0, 2, (1, 10)), x], dim=1)
    a, b = model(x, 1).logits[0, 5:35], model(shifted, 1).logits[0, 15:45]
    torch.testing.assert_close(a, b)


def test_untied_stack_has_fixed_depth():
    model = make(tied=False, depth=4)
    assert len(model.blocks) == 4
    assert torch.isfinite(model(torch.randint(0, 5, (2, 6)), 4).logits).all()
    with pytest.raises(ValueError, match="exactly 4 blocks"):
        model(torch.randint(0, 5, (2, 6)), 5)


def test_both_recall_lets_the_first_attention_see_the_input():
    """Internal recall from h_0 = 0: the first iteration's attention sees only zeros, so its
    output there is independent of x; with recall=both the entry injection gives it e."""
    for recall, sees in (("internal", False), ("both", True)):
        model = make(recall=recall)
        block = model.blocks[0]
        seen = []
        hook = block.layers[0].attn.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(out))
        for x in (torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)):
            model(x, 1)
        hook.remove()
        assert (not torch.allclose(seen[0], seen[1])) == sees, recall
    assert "blocks.0.recall_mid.proj.weight" in make(recall="both", recall_op="concat").state_dict()


# -- grids: 2-D relative positions and the 2-D local window (tasks whose layout is a grid) ---------
GRID = Layout(grid=True)


def reference_grid_attention(q, k, v, bias, side, window):
    """Dense attention over the zero-padded (side + 2w)^2 grid, keys outside each cell's window
    masked: the definition the sliced 2-D window must match."""
    b, h, length, dh = q.shape
    pad = side + 2 * window
    kp, vp = (F.pad(t.reshape(b, h, side, side, dh), (0, 0, window, window, window, window)).reshape(b, h, -1, dh)
              for t in (k, v))
    cell = torch.arange(length)
    qr, qc = cell // side + window, cell % side + window
    key = torch.arange(pad * pad)
    dr, dc = key[None] // pad - qr[:, None], key[None] % pad - qc[:, None]
    inside = (dr.abs() <= window) & (dc.abs() <= window)
    index = ((dr + window) * (2 * window + 1) + dc + window).clamp(0, (2 * window + 1) ** 2 - 1)
    scores = (q @ kp.transpose(-1, -2)) * dh ** -0.5 + bias[:, index]
    return torch.softmax(scores.masked_fill(~inside, float("-inf")), -1) @ vp


@pytest.mark.parametrize("side,window", [(1, 1), (4, 1), (5, 2), (7, 1)])
def test_grid_window_matches_dense_reference(side, window):
    torch.manual_seed(side)
    q, k, v = (torch.randn(2, 3, side * side, 8) for _ in range(3))
    bias = torch.randn(3, (2 * window + 1) ** 2)
    got = grid_local_attention(q, k, v, AttentionPattern(bias, window, side=side))
    torch.testing.assert_close(got, reference_grid_attention(q, k, v, bias, side, window))


def test_grid_window_reaches_w_cells_per_iteration():
    """After T iterations a cell has seen exactly the cells within T * w rows and columns: a change
    farther away leaves it untouched, a change at that distance does not (a 2-D conv's receptive field)."""
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(width=32, heads=4, window=1), 5, 3, layout=GRID).eval()
    with torch.no_grad():  # weights large enough that a change carries visibly across three iterations
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.3)
        model.pos_bias.table.zero_()
    x = torch.randint(1, 5, (1, 11 * 11))
    far, near = x.clone(), x.clone()
    far.view(11, 11)[5, 9] = 0  # 4 columns from the centre cell (5, 5)
    near.view(11, 11)[5, 8] = 0  # 3 columns from it
    with torch.no_grad():
        out = [model(t, 3).logits.view(11, 11, -1)[5, 5] for t in (x, far, near)]
    torch.testing.assert_close(out[0], out[1])
    assert (out[0] - out[2]).abs().max() > 1e-3


def test_grid_models_run_at_any_square_size_and_refuse_other_lengths():
    for kw in (dict(window=1), dict(window=0)):
        model = LoopedTransformer(ModelConfig(width=32, heads=4, **kw), 5, 3, layout=GRID)
        for side in (5, 9, 13):
            assert model(torch.randint(0, 5, (2, side * side)), 2).logits.shape == (2, side * side, 3)
        with pytest.raises(ValueError, match="square number of cells"):
            model(torch.randint(0, 5, (2, 50)), 2)


def test_grid_relative_bias_is_a_function_of_row_and_column_offsets():
    model = LoopedTransformer(ModelConfig(width=32, heads=4, max_distance=2), 5, 3, layout=GRID)
    with torch.no_grad():
        model.pos_bias.table.copy_(torch.randn_like(model.pos_bias.table))
    bias = model.attention_pattern(16).bias  # (heads, 16, 16) on a 4 x 4 grid
    for i, j in [(0, 15), (5, 6), (12, 3), (7, 7)]:
        dr, dc = j // 4 - i // 4, j % 4 - i % 4
        torch.testing.assert_close(bias[:, i, j], model.pos_bias.table[:, max(-2, min(2, dr)) + 2,
                                                                        max(-2, min(2, dc)) + 2])


def test_cuda_graph_outputs_are_copied_out_of_the_graph_pool(monkeypatch):
    """Under reduce-overhead the block's output lives in the CUDA graph's pool, which the next replay
    overwrites (the first CUDA run crashed on it): `compile_blocks` makes every step return a copy.
    Compilation itself is stubbed here (no GPU in CI); benchmarks/cudagraph_train.py checks the real
    thing on a GPU."""
    from loopkit.config import ModelConfig
    from loopkit.model import LoopedTransformer

    model = LoopedTransformer(ModelConfig(width=16, heads=2), vocab_size=2, num_classes=2)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: None)
    x = torch.randint(0, 2, (2, 5))
    s = model.start(x)
    for mode, copied in (("default", False), ("reduce-overhead", True), ("max-autotune", True)):
        model.compile_blocks(mode)
        seen = []
        hook = model.blocks[0].register_forward_hook(lambda m, i, out, seen=seen: seen.append(out))
        h = model.step(s.h0, s.e, s.pattern)
        hook.remove()
        assert torch.equal(h, seen[0]) and (h.data_ptr() != seen[0].data_ptr()) == copied
