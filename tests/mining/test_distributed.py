"""Two gloo processes (encoding shards and search blocks split over the ranks, an ivf index built by rank 0 and
read by rank 1, hardness sampling) write byte-identical files to one process."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from negkit.mining import IndexOptions, mine

from .conftest import EXAMPLE, PAIRS, output_bytes


def options(model: str, cache: str) -> dict:
    return {
        **EXAMPLE,
        "model": model,
        "max_seq_length": 64,
        "k": 3,
        "range_max": 15,
        "sampling": "hardness",
        "seed": 3,
        "index": "ivf",
        "index_options": IndexOptions(nlist=8, nprobe=2),
        "recall_sample": 40,
        "shard_size": 100,
        "query_block": 64,
        "cache_dir": cache,
    }


def run_rank(rank: int, world: int, init_file: str, out: str, model: str, cache: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    stages = []
    result = mine(PAIRS, out, callback=lambda stage, done, total: stages.append(stage), **options(model, cache))
    assert result.stats["processes"] == world
    torch.save(stages, f"{out}.stages.{rank}")
    if world > 1:
        dist.destroy_process_group()


def test_two_processes_write_the_same_bytes_as_one(tmp_path, tiny_model):
    one, two = tmp_path / "one", tmp_path / "two"
    mp.spawn(run_rank, args=(1, str(tmp_path / "init1"), str(one), tiny_model, str(tmp_path / "c1")), nprocs=1)
    mp.spawn(run_rank, args=(2, str(tmp_path / "init2"), str(two), tiny_model, str(tmp_path / "c2")), nprocs=2)
    assert output_bytes(one) == output_bytes(two)
    assert (two / "report.md").read_text().count("Processes: 2") == 1
    # each rank encoded and searched only its share: 9 document shards, 4 query shards, 7 search blocks
    ranks = [torch.load(f"{two}.stages.{rank}") for rank in range(2)]
    assert [r.count("encode-documents") for r in ranks] == [5, 4]
    assert [r.count("search") for r in ranks] == [4, 3]
    assert ranks[1].count("filter") == 0  # rank 0 filters, samples and writes
