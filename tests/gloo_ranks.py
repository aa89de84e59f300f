"""Real multi-process torch.distributed for the training tests: N spawned CPU ranks in one gloo group."""

import datetime
import multiprocessing
import os
import sys


def run_gloo_ranks(fn, world, out_dir, *args):
    """Call ``fn(rank, world, out_dir, *args)`` in ``world`` spawned processes joined in one gloo group.

    The ranks meet through a file store in ``out_dir`` (no port to pick, no rank serving the store to
    the others). After ``fn`` returns, every rank leaves the group with the training loop's own
    :func:`facelab.train.loop.leave_world`, then waits until all have, so that no rank exits while a
    peer is still tearing down. An exception in ``fn`` fails the call (as ``torch.multiprocessing``
    reports it); collectives time out after 2 minutes instead of hanging the suite.
    """
    import torch.multiprocessing as mp

    done = multiprocessing.get_context("spawn").Barrier(world)
    mp.spawn(_rank_main, args=(fn, world, str(out_dir), done, args), nprocs=world, join=True)


def _rank_main(rank, fn, world, out_dir, done, args):
    import torch
    import torch.distributed as dist

    from facelab.train.loop import leave_world

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out_dir}/gloo-store",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    fn(rank, world, out_dir, *args)
    leave_world()
    done.wait(timeout=120)
    # Every result is on disk and every rank has left the group: skip the interpreter's teardown,
    # where torch's remaining gloo threads are destroyed in no fixed order (a rare SIGABRT in CI).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
