"""Encoding sharded over Ray actors: one model per actor (one GPU each on a cluster, DALI decoding on that GPU).

    c3dhash index --checkpoint best.pt --videos DIR --out INDEX --workers 4
    c3dhash encode --checkpoint best.pt --split train --out train.npz --workers 8 --device gpu --address auto

    pool = EncoderPool(state, workers=2)           # state: the checkpoint dict (put in the object store once)
    res = pool.encode(paths, progress=True)        # == eval.videos.encode_paths(state, paths), bit for bit

Plain actors, not Ray Data: each actor is created with num_gpus=1, so Ray gives it its own GPU
(CUDA_VISIBLE_DEVICES) and the actor builds its DALI pipeline on device 0 of what it sees; model and CUDA
context live as long as the actor. The driver deals out chunks of videos (eval/index/videos.py), two in flight per
actor so none waits for the next; results are merged by chunk id, i.e. in input order, whatever the order in
which they finish. Every chunk is encoded by exactly one successful task: when an actor dies (node lost, OOM,
killed), its in-flight chunks go to a fresh actor, up to `max_redo` times per chunk. Because a video's clips
form a batch of their own, the codes equal the single-process codes bit for bit.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Sequence

from tqdm import tqdm

from c3dhash.eval.ray_session import alive_nodes, autoscales, join_or_start, wait_for
from c3dhash.eval.index.videos import DEFAULT_CHUNK, ChunkEncoder, Encoded, chunks, encode_paths, merge

IN_FLIGHT = 2  # chunks queued per actor


class EncodeError(RuntimeError):
    """Sharded encoding could not finish (a chunk kept losing its worker)."""


class _Encoder:
    """Ray actor body: one ChunkEncoder (model + DALI on this actor's device)."""

    def __init__(self, state: dict[str, Any], device: str, num_threads: int, amp: str,
                 config: dict[str, Any] | None, static: bool, mirror: bool):
        import torch
        torch.set_num_threads(num_threads)
        self.enc = ChunkEncoder(state, device=device, num_threads=num_threads, amp=amp, config=config,
                                static=static, mirror=mirror)

    def encode(self, k: int, paths: list[str]) -> tuple[int, Encoded]:
        return k, self.enc.encode(paths)

    def node(self) -> str:
        import ray
        return ray.get_runtime_context().get_node_id()


class EncoderPool:
    """`workers` encoder actors; `encode` deals chunks of videos to them and merges in input order."""

    def __init__(self, state: dict[str, Any], *, workers: int, use_gpu: bool = False, num_threads: int = 1,
                 amp: str = "auto", config: dict[str, Any] | None = None, static: bool = False, max_redo: int = 3,
                 mirror: bool = False):
        import ray
        self.bits = int((state.get("config") or config or {}).get("model", {}).get("bits", 0))
        self.options = dict(num_cpus=num_threads, num_gpus=1 if use_gpu else 0, max_restarts=0)
        self.args = (ray.put(state), "gpu" if use_gpu else "cpu", num_threads, amp, config, static, mirror)
        self.max_redo, self.replaced = max_redo, 0
        self.actors = [self._new() for _ in range(workers)]

    def _new(self) -> Any:
        import ray
        return ray.remote(_Encoder).options(**self.options).remote(*self.args)

    def encode(self, paths: Sequence[str], *, chunk: int = DEFAULT_CHUNK, progress: bool = False,
               on_chunk: Callable[[int], None] | None = None) -> Encoded:
        """Every video of `paths` once, merged in input order; `on_chunk(videos)` after each chunk."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError
        blocks = chunks(len(paths), chunk)
        todo, redo = deque(range(len(blocks))), [0] * len(blocks)
        inflight: dict[Any, tuple[Any, int]] = {}  # ref -> (actor, chunk id)
        parts: dict[int, tuple[tuple[int, int], Encoded]] = {}
        with tqdm(total=len(paths), desc=f"encode x{len(self.actors)} workers", unit="video",
                  disable=not progress) as bar:
            while todo or inflight:
                self._deal(todo, inflight, blocks, paths)
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                actor, k = inflight.pop(ref)
                try:
                    parts[k] = (blocks[k], ray.get(ref)[1])
                except RayActorError as exc:
                    self._lost(actor, k, todo, redo, exc)
                    continue
                except RayTaskError as exc:  # our own error inside the actor: the user's message, not Ray's
                    raise exc.cause if isinstance(exc.cause, Exception) else exc
                bar.update(blocks[k][1] - blocks[k][0])
                if on_chunk:
                    on_chunk(blocks[k][1] - blocks[k][0])
        return merge(len(paths), self.bits, parts)

    def _deal(self, todo: deque, inflight: dict, blocks: list[tuple[int, int]], paths: Sequence[str]) -> None:
        """Top every actor up to IN_FLIGHT chunks, least loaded first."""
        for actor in sorted(self.actors, key=lambda a: sum(1 for b, _ in inflight.values() if b is a)):
            load = sum(1 for b, _ in inflight.values() if b is actor)
            while todo and load < IN_FLIGHT:
                k = todo.popleft()
                a, b = blocks[k]
                inflight[actor.encode.remote(k, list(paths[a:b]))] = (actor, k)
                load += 1

    def _lost(self, actor: Any, k: int, todo: deque, redo: list[int], exc: Exception) -> None:
        """`actor` died: queue its chunk again and replace it (once, however many chunks it held)."""
        redo[k] += 1
        if redo[k] > self.max_redo:
            raise EncodeError(f"chunk {k} of the videos lost its worker {redo[k]} times; giving up "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
        todo.appendleft(k)
        slots = [i for i, a in enumerate(self.actors) if a is actor]
        if not slots:
            return  # replaced already, for another chunk it held
        import ray
        ray.kill(actor, no_restart=True)
        self.actors[slots[0]] = self._new()
        self.replaced += 1
        print(f"encode: worker {slots[0]} lost ({type(exc).__name__}); its chunks go to a new worker", flush=True)

    def nodes(self) -> list[str]:
        """The Ray node id of every actor (where Ray placed them)."""
        import ray
        return ray.get([a.node.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


def chunk_size(n: int, workers: int) -> int:
    """Small enough that every worker gets several chunks (balance, cheap redo), at most DEFAULT_CHUNK."""
    return max(1, min(DEFAULT_CHUNK, -(-n // max(1, workers * IN_FLIGHT * 2))))


SCALE_UP_TIMEOUT_S = float(os.environ.get("C3DHASH_SCALE_UP_TIMEOUT_S", 900))


def gpu_actors(device: str, workers: int, num_threads: int, *, timeout_s: float | None = None) -> bool:
    """Whether the encoder actors take a GPU each. `auto` on an autoscaling cluster whose GPU nodes are scaled
    down asks the autoscaler for them and waits (countdown) instead of quietly choosing CPU actors; only when
    none came within the timeout does it say so and use CPU actors. `gpu` waits too, and fails if none came."""
    import ray
    if device == "cpu":
        return False
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return True
    timeout = SCALE_UP_TIMEOUT_S if timeout_s is None else timeout_s
    if autoscales():
        def room() -> int:
            return sum(min(int(n["Resources"].get("GPU", 0)), int(n["Resources"].get("CPU", 0) // num_threads))
                       for n in alive_nodes())
        got = wait_for(room, 1, [{"CPU": num_threads, "GPU": 1}] * workers, timeout_s=timeout,
                       what="GPU encoder actors")
        if got >= 1:
            return True
    if device == "gpu":
        raise EncodeError(f"--device gpu: the Ray cluster has no GPU"
                          f"{f' (the autoscaler gave none within {timeout:.0f} s)' if autoscales() else ''}; "
                          f"add GPU nodes or pass --device cpu")
    print("encode --device auto: the Ray cluster has no GPU" +
          (f" and its autoscaler gave none within {timeout:.0f} s" if autoscales() else "") +
          "; encoding on CPU actors", flush=True)
    return False


def encode_files(state: dict[str, Any], paths: Sequence[str], *, workers: int = 1, device: str = "auto",
                 address: str | None = None, num_threads: int = 1, amp: str = "auto",
                 config: dict[str, Any] | None = None, progress: bool = True, static: bool = False,
                 mirror: bool = False) -> Encoded:
    """`paths` encoded in this process (workers=1, no address) or over `workers` Ray actors: the same codes.
    device: auto (CUDA here / a GPU per actor where the Ray cluster has GPUs), gpu, or cpu."""
    import ray
    if workers <= 1 and not address:
        with tqdm(total=len(paths), desc="encode", unit="video", disable=not progress) as bar:
            return encode_paths(state, paths, chunk=DEFAULT_CHUNK, device=device, num_threads=num_threads,
                                amp=amp, config=config, on_chunk=bar.update, static=static, mirror=mirror)
    started = join_or_start(address, num_cpus=workers * num_threads)
    try:
        use_gpu = gpu_actors(device, workers, num_threads)
        pool = EncoderPool(state, workers=workers, use_gpu=use_gpu, num_threads=num_threads, amp=amp,
                           config=config, static=static, mirror=mirror)
        try:
            return pool.encode(paths, chunk=chunk_size(len(paths), workers), progress=progress)
        finally:
            pool.shutdown()
    finally:
        if started:
            ray.shutdown()
