"""Training across processes (Lightning DDP) with the same arithmetic as one process.

One home for what every trainer needs to run on ``devices`` processes:

- :func:`check_parallel` and :func:`trainer_parallelism`: the options, validated early, turned
  into Lightning ``Trainer`` arguments (CPU processes joined by a gloo process group).
- :class:`ShardedBatches`: each step's *global* batch is exactly the batch one process would
  take from the seeded epoch shuffle; it is dealt out to the ranks deterministically. A rank
  that would get no row (of a kind, see ``kinds``) gets a zero-weight copy of one instead of
  Lightning's epoch-end padding, which would add real samples to the epoch.
- :func:`global_sums` and :func:`weighted_mean_loss`: each rank's loss is scaled so that DDP's
  gradient *average* equals the gradient of the global (weighted) batch mean, however unevenly
  the rows were dealt.
- :class:`SafeSyncBatchNorm`: batch statistics over the global batch. Torch's SyncBatchNorm
  runs on GPUs only and would drop :class:`~cosynth.models.layers.SafeBatchNorm`'s rule for a
  batch of one row, so this plugin keeps that rule, decided on the global row count.

Validation is not sharded: every process scores the whole validation split, so validation
metrics, and with them the kept epoch, are exactly those of one process.
"""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch.utils.data import Sampler

from cosynth.models.layers import SafeBatchNorm

STRATEGIES = ("auto", "ddp")


def check_parallel(devices: int, strategy: str) -> None:
    """Reject bad options before any data is read (ValueError with the fix)."""
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ValueError(f"devices must be a whole number ≥ 1, not {devices!r}")
    if strategy not in STRATEGIES:
        hint = " (ddp_spawn cannot pickle cosynth's trainers; use ddp)" if strategy == "ddp_spawn" else ""
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}{hint}")


def trainer_parallelism(devices: int, strategy: str, *, find_unused_parameters: bool = False) -> dict:
    """``Trainer`` keyword arguments for ``devices`` CPU processes.

    One device is a plain single-process run whatever the strategy. More devices start DDP
    processes (Lightning re-runs the command line in each) joined by gloo; the trainers' own
    :class:`ShardedBatches` replace Lightning's sampler (whose wrapper deals the shuffle out
    round-robin and pads the epoch with repeated rows), and :class:`SafeSyncBatchNorm` its
    batch-norm sync (``sync_batchnorm=True`` would install torch's GPU-only SyncBatchNorm).
    ``find_unused_parameters`` is for models whose branches can sit out a batch (COSNet's
    structure encoder on a batch without structures).
    """
    check_parallel(devices, strategy)
    if devices == 1:
        return {"accelerator": "cpu", "devices": 1}
    from lightning.pytorch.strategies import DDPStrategy

    return {"accelerator": "cpu", "devices": devices, "use_distributed_sampler": False,
            "strategy": DDPStrategy(process_group_backend="gloo", find_unused_parameters=find_unused_parameters),
            "plugins": [safe_sync_batchnorm()]}


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def main_process() -> bool:
    """Whether this process writes files: rank 0, known before the process group exists.

    Lightning's DDP launcher re-runs the command in each extra process with ``LOCAL_RANK`` (and
    ``NODE_RANK``) set; ``rank_zero_only.rank`` reads them when Lightning is imported.
    """
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


# ---- data: one global batch per step, dealt to the ranks ---------------------------------------
def pad_index(i: int) -> int:
    """The index that :class:`ShardedBatches` yields for a zero-weight copy of row ``i``."""
    return -1 - i


def unpad(indices) -> tuple[list[int], list[bool]]:
    """(row indices, whether each is a zero-weight copy) of a shard from :class:`ShardedBatches`."""
    return [i if i >= 0 else -1 - i for i in indices], [i < 0 for i in indices]


class ShardedBatches(Sampler):
    """Batches of ``order`` (an epoch-keyed permutation), this rank's share of each.

    The global batch of step ``b`` is ``order[b·B:(b+1)·B]``, what one process with batch size
    ``B`` takes. Its rows are grouped by ``kinds`` (e.g. whether a structure is present) and dealt
    round-robin, so every rank gets about ``B / world`` rows and a share of each kind; a rank left
    without a row of a kind that another rank has gets a zero-weight copy of one (see
    :func:`pad_index`). That keeps every rank running the same layers in every step — a rank that
    skipped a synchronised layer would stall the others — at the cost of that copy entering the
    batch statistics of that one step. Rank and world size are read when an epoch starts, so one
    sampler serves single- and multi-process runs.
    """

    def __init__(self, order, batch_size: int, kinds=None):
        if batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, not {batch_size}")
        self.order, self.batch_size = order, batch_size
        self.kinds = None if kinds is None else [int(k) for k in kinds]

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        rank, size = world()
        order = list(self.order)
        for start in range(0, len(order), self.batch_size):
            yield self.shard(order[start:start + self.batch_size], rank, size)

    def shard(self, batch: list[int], rank: int, size: int) -> list[int]:
        if size == 1:
            return batch
        kinds = [0] * len(batch) if self.kinds is None else [self.kinds[i] for i in batch]
        mine, dealt = [], 0
        for kind in sorted(set(kinds)):
            group = [i for i, k in zip(batch, kinds) if k == kind]
            share = [i for j, i in enumerate(group) if (dealt + j) % size == rank]
            mine += share or [pad_index(group[0])]
            dealt += len(group)
        return mine


# ---- loss ---------------------------------------------------------------------------------------
def global_sums(*values: torch.Tensor) -> list[torch.Tensor]:
    """Each value summed over the processes (one collective; detached), or itself in one process."""
    flat = torch.stack([torch.as_tensor(v).detach().to(torch.float64).reshape(()) for v in values])
    if world()[1] > 1:
        dist.all_reduce(flat)
    return list(flat)


def weighted_mean_loss(per_row: torch.Tensor, weight: torch.Tensor | None, *extra: torch.Tensor):
    """(loss to back-propagate, the global batch's weighted mean loss, global sums of ``extra``).

    ``per_row`` is (n,) or (n, k); ``weight`` is None or broadcastable to it. The returned loss is
    ``world · Σ_local w·l / Σ_global w``: DDP averages the ranks' gradients, so the result is the
    gradient of ``Σ_global w·l / Σ_global w``, the weighted mean one process computes over the
    same batch; in one process it *is* that mean.
    """
    w = torch.ones_like(per_row) if weight is None else torch.broadcast_to(weight, per_row.shape).to(per_row.dtype)
    local = (per_row * w).sum()
    total_w, total_loss, *sums = global_sums(w.sum(), local, *extra)
    denominator = total_w.clamp_min(1e-12)
    loss = local * (world()[1] / denominator.to(local.dtype))
    return loss, (total_loss / denominator).to(per_row.dtype), sums


# ---- batch norm ---------------------------------------------------------------------------------
class _AllReduce(torch.autograd.Function):
    """Sum over the processes, differentiable: the gradient is summed the same way (each rank's
    rows feed every rank's statistics)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduce.apply(x)


class SafeSyncBatchNorm(SafeBatchNorm):
    """:class:`SafeBatchNorm` whose training statistics cover the rows of every process.

    Mean and variance come from two differentiable all-reduces (sum and count, then the summed
    squared deviations: the same two-pass variance as one process), so gradients flow through
    the statistics as in one process. A global batch of one row uses the running statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        sums = _all_reduce(torch.cat([x.sum(0), x.new_full((1,), x.shape[0])]))
        n = sums[-1]
        if int(n.item()) < 2:
            return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                                  False, 0.0, self.eps)
        mean = sums[:-1] / n
        var = _all_reduce(((x - mean) ** 2).sum(0)) / n
        if self.track_running_stats:
            self.num_batches_tracked += 1
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * var * n / (n - 1))
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


def _swap_batchnorm(module: torch.nn.Module, cls: type) -> torch.nn.Module:
    """``module`` with each SafeBatchNorm child rebuilt as ``cls`` (same parameters and buffers)."""
    for name, child in module.named_children():
        if isinstance(child, SafeBatchNorm) and type(child) is not cls:
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap_batchnorm(child, cls)
    return module


def safe_sync_batchnorm():
    """A Lightning ``LayerSync`` plugin: SafeBatchNorm ⇄ :class:`SafeSyncBatchNorm` (their state
    dicts match, so checkpoints of a DDP run load into the plain model). Built on call, so that
    importing this module does not import Lightning."""
    from lightning.pytorch.plugins.layer_sync import LayerSync

    class SafeSyncBatchNormPlugin(LayerSync):
        def apply(self, model: torch.nn.Module) -> torch.nn.Module:
            return _swap_batchnorm(model, SafeSyncBatchNorm)

        def revert(self, model: torch.nn.Module) -> torch.nn.Module:
            return _swap_batchnorm(model, SafeBatchNorm)

    return SafeSyncBatchNormPlugin()
