"""What `loopkit eval` reports and what it costs: the per-sample trace stays flat in memory as T
grows (only its (N, T) tables grow), and the summary never reports another T's value as the
training T's."""

import gc

import torch

from loopkit import config
from loopkit.evaluate import trace_set
from loopkit.model import LoopedTransformer
from loopkit.tasks import build_task
from test_train import TINY


def untrained():
    cfg = config.load(None, TINY)
    task = build_task(cfg.task)
    torch.manual_seed(0)
    return task, LoopedTransformer(cfg.model, task.vocab_size, task.num_classes)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no __class__ lookups


def test_trace_keeps_no_tensor_per_iteration(monkeypatch):
    """Tensors that survive every iteration (a few per-sample scalars appended to lists, stacked at
    the end) fragment the heap between the iterations' large activations: eval grew by about one
    state per iteration (1.5 GB at 5 sudoku puzzles x T = 5000). Counted at the same point of every
    iteration, the live tensors must not grow with t."""
    task, model = untrained()
    s = task.eval_sets()[0]
    seen, correct = [], task.correct

    def counting(logits, y, x=None):
        seen.append(live_tensors())
        return correct(logits, y, x)

    monkeypatch.setattr(task, "correct", counting)
    T = 24
    trace = trace_set(model, task, s, T, len(s.x), torch.device("cpu"))
    assert len(seen) == T
    assert seen[-1] == seen[1], f"live tensors grew from {seen[1]} to {seen[-1]} over {T - 2} iterations"
    n = len(s.x)  # what the trace keeps: (N, T) per quantity, nothing larger
    tables = [*trace.scores.values(), trace.residual, trace.changed, trace.prob_change]
    assert all(t.shape == (n, T) for t in tables)
    assert sum(t.untyped_storage().nbytes() for t in tables) == n * T * sum(t.element_size() for t in tables)


def test_trace_is_the_same_whatever_the_batch_size():
    task, model = untrained()
    s = task.eval_sets()[1]
    whole = trace_set(model, task, s, 10, len(s.x), torch.device("cpu"))
    parts = trace_set(model, task, s, 10, 7, torch.device("cpu"))  # 64 samples: 9 batches, the last of 1
    for m in whole.scores:
        assert torch.equal(whole.scores[m], parts.scores[m])
    assert torch.equal(whole.changed, parts.changed)
    torch.testing.assert_close(whole.residual, parts.residual)
    torch.testing.assert_close(whole.prob_change, parts.prob_change)
