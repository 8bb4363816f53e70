"""A generic, iteration-based training loop (the original's runner, without its registry).

The loop knows nothing about Video-LLaMA: a stage hands it

* ``params``: the named trainable parameters (everything else stays frozen),
* ``loss_fn(batch) -> (loss, n_samples)``: one micro-batch forward,
* ``batch_fn(index, rank, world) -> batch``: the micro-batch for a global micro-step.

Batches are a pure function of the micro-step index, so resuming after an interruption
only needs the step counter: the data order, and therefore the loss curve, continue exactly
as if nothing had happened. What the loop adds: AdamW with weight decay only on matrices,
linear warm-up then cosine decay, gradient accumulation, mixed precision and multi-process
gradient averaging through ``accelerate`` (CPU, one GPU, or ``accelerate launch`` /
``torchrun`` with no code change), a progress bar, a JSONL log, periodic checkpoints and a
separate training-state file (optimizer, fp16 loss scaler, schedule, step, RNG).

The state file is ours, not ``Accelerator.save_state``/``load_state``: the loop trains loose
parameters (no prepared model for accelerate to save), and ``load_state`` reads registered
objects with ``torch.load(weights_only=False)`` (a pickle that can run code), carries on
silently when the RNG states cannot be restored, and clears torch's list of safe globals.
One file read with ``weights_only=True`` keeps what accelerate's would: the fp16
``GradScaler`` state (scale, growth tracker) is in it, so a resumed fp16 run continues with
the scale it had instead of starting again at 65536.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig:
    """Optimisation settings of one stage. Names follow the original's train configs."""

    max_steps: int = 1000  # optimizer steps (the original's epochs * iters_per_epoch)
    batch_size: int = 32  # samples per micro-batch on each process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # the original's init_lr: peak after warm-up
    min_lr: float = 8e-5  # end of the cosine
    warmup_lr: float = 1e-6  # start of the linear warm-up
    warmup_steps: int = 2500
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    max_grad_norm: float = 0.0  # 0 disables clipping (the original does not clip)
    mixed_precision: str = "auto"  # "auto" (bf16/fp16 on GPU, none on CPU), "no", "bf16", "fp16"
    seed: int = 42
    log_every: int = 10  # optimizer steps between log lines
    save_every: int = 500  # optimizer steps between checkpoints (and at the end)
    # Multipliers of the learning rate per module: the first part of a parameter's name
    # (``{"vision_encoder": 3.0}``). Modules not named follow the schedule as is.
    lr_scale: dict[str, float] = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine."""
    if step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / max(1, cfg.warmup_steps)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float,
                 lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Split parameters as the original: decay only >=2-D weights that are not biases or norms.

    Each group carries ``lr_scale``, its multiplier of the scheduled learning rate: 1 for the
    first two groups (decay, no decay); modules named in ``lr_scale`` get groups of their own.
    A name that matches no parameter is an error (a typo would otherwise do nothing).
    """
    lr_scale = lr_scale or {}
    unknown = sorted(set(lr_scale) - {name.split(".", 1)[0] for name, _ in named})
    if unknown:
        raise ValueError(f"lr_scale names {unknown}, which hold no trainable parameter of this stage; "
                         "use the first part of a parameter name, such as 'vision_encoder'")
    groups: dict[tuple[float, bool], dict] = {}
    for scale in (1.0, *sorted(set(lr_scale.values()) - {1.0})):
        for decays in (True, False):
            groups[scale, decays] = {"params": [], "weight_decay": weight_decay if decays else 0.0,
                                     "lr_scale": scale}
    for name, p in named:
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "norm" in name.lower() or ".ln" in name or name.startswith("ln")
        decays = not (p.ndim < 2 or leaf == "bias" or is_norm)
        groups[lr_scale.get(name.split(".", 1)[0], 1.0), decays]["params"].append(p)
    return [g for (scale, _), g in groups.items() if scale == 1.0 or g["params"]]


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(cfg: TrainConfig):
    """An ``Accelerator`` for this process (single process unless launched distributed)."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision))


# -- training state -------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def save_training_state(path: Path, step: int, optimizer, cfg: TrainConfig,
                        params: list[tuple[str, nn.Parameter]], scaler=None) -> None:
    """Write trainable weights, optimizer, loss scaler, schedule, step and RNG to ``path`` atomically.

    The trainable weights are small (adapters only) and kept here too, so that resuming
    needs this one file whatever the model folder's layout. ``scaler``: the accelerator's
    fp16 ``GradScaler`` (None without fp16).
    """
    state = {"step": step, "optimizer": optimizer.state_dict(), "schedule": asdict(cfg),
             "rng": _rng_state(), "params": {n: p.detach().cpu() for n, p in params}}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a file written by ``save_training_state`` (tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise ValueError(f"cannot read training state {path} ({err}); delete it to start the "
                         "stage again from its beginning") from err


# -- the loop ---------------------------------------------------------------------------
@dataclass
class StageResult:
    losses: list[float]  # mean loss of each optimizer step run in this call
    start_step: int  # step the run started (or resumed) from
    end_step: int


def run(
    name: str,
    params: list[tuple[str, nn.Parameter]],
    loss_fn: Callable[[Any], tuple[torch.Tensor, int]],
    batch_fn: Callable[[int, int, int], Any],
    cfg: TrainConfig,
    out_dir: Path,
    save_fn: Callable[[Path], None],
    accelerator=None,
    resume: bool = False,
    show_progress: bool = True,
) -> StageResult:
    """Train ``params`` for ``cfg.max_steps`` optimizer steps.

    Args:
        name: stage name, written to the log and shown on the progress bar.
        params: named trainable parameters (already on the accelerator's device).
        loss_fn: computes the mean loss of one micro-batch and its number of samples.
        batch_fn: the micro-batch for (global micro-step, process rank, process count).
        cfg: optimisation settings.
        out_dir: receives ``train_log.jsonl``, ``training_state.pt`` and checkpoints.
        save_fn: writes the model (a model folder) into the given directory.
        accelerator: an ``accelerate.Accelerator``; made from ``cfg`` when omitted.
        resume: continue from ``out_dir/training_state.pt`` when it exists.
        show_progress: draw a tqdm bar (main process only).
    """
    if not params:
        raise ValueError(f"stage {name!r} has no trainable parameters; check which branch it trains")
    acc = accelerator or make_accelerator(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + acc.process_index)
    optimizer = torch.optim.AdamW(param_groups(params, cfg.weight_decay, cfg.lr_scale), lr=cfg.warmup_lr,
                                  betas=(cfg.beta1, cfg.beta2))
    optimizer = acc.prepare(optimizer)  # handles the fp16 loss scaler
    state_path = out_dir / STATE_FILE
    step = _resume(state_path, params, optimizer, acc) if resume and state_path.exists() else 0
    start = step
    losses: list[float] = []
    bar = _progress(name, start, cfg.max_steps, show_progress and acc.is_main_process)
    tensors = [p for _, p in params]
    t_log, n_log = time.perf_counter(), 0
    while step < cfg.max_steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss_sum, n_step = _optimizer_step(step, loss_fn, batch_fn, cfg, optimizer, acc, tensors)
        step += 1
        losses.append(loss_sum)
        n_log += n_step * acc.num_processes
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.1e}")
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            recent = losses[-cfg.log_every:]
            row = {"stage": name, "step": step, "loss": sum(recent) / len(recent),
                   "lr": lr, "samples_per_s": n_log / max(now - t_log, 1e-9), "time": time.time()}
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.1e}", sps=f"{row['samples_per_s']:.1f}")
            if acc.is_main_process:
                with open(out_dir / LOG_FILE, "a") as f:
                    f.write(json.dumps(row) + "\n")
            t_log, n_log = now, 0
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            _checkpoint(acc, out_dir, step, optimizer, cfg, save_fn, params)
    if bar is not None:
        bar.close()
    return StageResult(losses=losses, start_step=start, end_step=step)


def _resume(state_path: Path, params: list[tuple[str, nn.Parameter]], optimizer, acc) -> int:
    """Restore parameters, optimizer, loss scaler and RNG from ``state_path``; return its step."""
    state = load_training_state(state_path)
    _restore_params(params, state["params"], state_path)
    optimizer.load_state_dict(state["optimizer"])
    if acc.scaler is not None and "scaler" in state:  # a file from before fp16 state was kept has none
        acc.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _optimizer_step(step: int, loss_fn, batch_fn, cfg: TrainConfig, optimizer, acc,
                    tensors: list[nn.Parameter]) -> tuple[float, int]:
    """Accumulate ``cfg.grad_accum`` micro-batches and take one step; return (mean loss, samples)."""
    loss_sum, n_step = 0.0, 0
    for micro in range(cfg.grad_accum):
        batch = batch_fn(step * cfg.grad_accum + micro, acc.process_index, acc.num_processes)
        with acc.autocast():
            loss, n = loss_fn(batch)
        acc.backward(loss / cfg.grad_accum)
        loss_sum += float(loss.detach()) / cfg.grad_accum
        n_step += n
    _average_gradients(acc, tensors)
    if cfg.max_grad_norm > 0:
        acc.clip_grad_norm_(tensors, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, n_step


def _restore_params(params: list[tuple[str, nn.Parameter]], saved: dict[str, torch.Tensor],
                    path: Path) -> None:
    names = [n for n, _ in params]
    if sorted(names) != sorted(saved):
        raise ValueError(f"{path} holds a different set of trainable parameters than this stage "
                         f"({len(saved)} saved vs {len(names)} now); resume with the same recipe "
                         "or start a fresh --out directory")
    with torch.no_grad():
        for n, p in params:
            p.copy_(saved[n].to(p.device, p.dtype))


def _average_gradients(acc, tensors: list[torch.Tensor]) -> None:
    # Manual all-reduce instead of a DDP wrapper: a stage calls model methods directly
    # (not one forward()), and only a small adapter is trainable, so this stays cheap.
    if acc.num_processes == 1:
        return
    for p in tensors:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad = acc.reduce(p.grad, reduction="mean")


def _checkpoint(acc, out_dir: Path, step: int, optimizer, cfg: TrainConfig,
                save_fn: Callable[[Path], None], params: list[tuple[str, nn.Parameter]]) -> None:
    # Model first, then the state file that points past it: a crash in between leaves a
    # state that resumes from the previous checkpoint's step with its weights.
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_fn(out_dir / "model")
        save_training_state(out_dir / STATE_FILE, step, optimizer, cfg, params, acc.scaler)
    acc.wait_for_everyone()


def _progress(name: str, start: int, total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=name, unit="step", dynamic_ncols=True)


def batch_generator(seed: int, index: int, rank: int) -> torch.Generator:
    """A generator seeded from (seed, micro-step, rank): the batch sampling of a step."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + index) * 1_009 + rank)
    return g
