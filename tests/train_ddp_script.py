"""One optimizer step of the library's training step, run by tests/test_train_distributed.py.

    python tests/train_ddp_script.py OUT.safetensors GLOBAL_BATCH MICRO_BATCH
    accelerate launch --multi_gpu --num_processes 2 ... tests/train_ddp_script.py OUT GLOBAL MICRO

Each process takes its rank's slice of one fixed global batch (ranks in order, as the
trainer does), runs ``contrastive_step`` and one SGD step, then the main process saves
the mean loss, the gradients and the updated weights.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from train_fixtures import random_batch, tiny_model  # noqa: E402

from workbench.train import ContrastiveEncoder, clamp_logit_scale, contrastive_step, split_micro_batches  # noqa: E402


def main(out: str, global_batch: int, micro_batch: int) -> None:
    accelerator = Accelerator(cpu=True)  # without cpu=True, --multi_gpu on a CPU host starts independent rank-0s
    world, rank = accelerator.num_processes, accelerator.process_index
    model = tiny_model(seed=0)
    model.train()
    encoder = ContrastiveEncoder(model)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.5)
    encoder, optimizer = accelerator.prepare(encoder, optimizer)
    batch = random_batch(global_batch, seed=1)
    local = global_batch // world
    mine = {k: v[rank * local : (rank + 1) * local] for k, v in batch.items()}
    loss = contrastive_step(
        encoder, split_micro_batches(mine, micro_batch),
        backward=accelerator.backward, no_sync=lambda: accelerator.no_sync(encoder),
    )
    loss = accelerator.reduce(loss, reduction="mean")
    inner = accelerator.unwrap_model(encoder).clip
    grads = {f"grad.{n}": p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
    optimizer.step()
    clamp_logit_scale(encoder)
    if accelerator.is_main_process:
        tensors = {"loss": loss.reshape(1), "world": torch.tensor([world])}
        tensors.update(grads)
        tensors.update({f"weight.{n}": p.detach().clone() for n, p in inner.named_parameters()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
