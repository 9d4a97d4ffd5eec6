"""The training loop: epochs of batches with a schedule, mixed precision, distillation, a sparsity
regulariser, checkpoints and DistributedDataParallel. Public entry points: :mod:`core.train.loop`.

Plain functions shared by the GUI, the CLI and the tests. Like the pipeline, they take
``progress(stage, done, total, message)`` and ``should_stop()`` (polled between batches; a cancel
raises :class:`~core.errors.Cancelled`), plus ``paused()`` (while it returns True the loop waits
between batches). They train a COPY: the model passed in is never modified.

* learning-rate schedule: cosine (per step) or constant; SGD (momentum) or AdamW.
* mixed precision: ``torch.autocast`` + ``GradScaler`` only when the device is CUDA.
* knowledge distillation: ``teacher`` (e.g. the original model) adds
  ``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` with weight ``distill_alpha``.
* sparse learning: ``sparse_lambda > 0`` adds the group regulariser of :mod:`core.train.sparse`.
* checkpoints (:mod:`core.train.checkpoint`): written after every epoch; ``resume=True``
  continues from the last one.
* DistributedDataParallel (:mod:`core.train.distributed`): when launched by ``torchrun`` the train
  set is sharded and only rank 0 writes files.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import Cancelled, PruneStudioError
from core.train.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, check_shapes, load_checkpoint,
                                   save_checkpoint)
from core.train.data import Data, split_batch
from core.train.distributed import barrier, init_distributed, train_loader
from core.train.evaluate import EvalResult, call_model, compute_loss, evaluate, is_classification, to_device


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # sgd | adamw
    schedule: str = "cosine"  # cosine | constant
    device: str = "cpu"
    amp: bool = True  # mixed precision, used only on CUDA
    distill_alpha: float = 0.5  # weight of the distillation term when a teacher is given
    temperature: float = 4.0
    sparse_lambda: float = 0.0  # > 0: group-sparsity regulariser (sparse learning)
    sparse_alpha: float = 4.0
    sparse_schedule: str = "linear"  # constant | linear | exp (growing strength)
    sparse_warmup: float = 0.5  # fraction of training over which the strength grows
    sparsity_threshold: float = 0.05
    checkpoint_dir: str | None = None
    resume: bool = False
    max_batches: int | None = None  # per epoch (quick runs)
    seed: int = 0

    def validate(self):
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise PruneStudioError(f"epochs must be a non-negative integer, got {self.epochs}")
        if not self.lr > 0:
            raise PruneStudioError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adamw"):
            raise PruneStudioError(f"optimizer must be sgd or adamw, got '{self.optimizer}'")
        if self.schedule not in ("cosine", "constant"):
            raise PruneStudioError(f"schedule must be cosine or constant, got '{self.schedule}'")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise PruneStudioError(f"distillation weight must be in [0, 1], got {self.distill_alpha}")
        if self.temperature <= 0:
            raise PruneStudioError(f"temperature must be > 0, got {self.temperature}")
        if self.sparse_lambda < 0:
            raise PruneStudioError(f"sparsity strength must be >= 0, got {self.sparse_lambda}")
        if self.resume and not self.checkpoint_dir:
            raise PruneStudioError("resume needs a checkpoint folder (--checkpoint DIR)")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)  # one record per epoch
    final: EvalResult | None = None
    seconds: float = 0.0
    resumed_from: int | None = None  # epoch the run resumed after


def _wait_if_paused(paused, should_stop, progress, msg):
    if paused is None or not paused():
        return
    if progress:
        progress("paused", 0, 1, msg)
    while paused():
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
        time.sleep(0.05)


def non_finite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding NaN or inf."""
    return [n for n, t in model.state_dict().items()
            if t.is_floating_point() and not torch.isfinite(t).all()]


def diverged(cfg: TrainConfig, what: str) -> PruneStudioError:
    """Training must stop on a non-finite loss or weights: nothing broken is saved."""
    return PruneStudioError(f"training diverged: {what}; nothing was saved (lower the learning "
                            f"rate, now {cfg.lr:g})")


def distill_loss(student_out, teacher_out, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student_out.float() / t, dim=1),
                    F.softmax(teacher_out.float() / t, dim=1), reduction="batchmean") * (t * t)


def train(model: nn.Module, data: Data, config: TrainConfig | None = None, loss_fn=None,
          teacher: nn.Module | None = None, dg=None, progress=None, should_stop=None, paused=None,
          on_epoch=None, on_batch=None, evaluate_each_epoch: bool = True) -> TrainResult:
    """Train a copy of ``model`` on ``data``; returns it with the per-epoch history.

    ``dg`` (the model's dependency graph) is needed when ``config.sparse_lambda > 0``.
    ``on_epoch(record)`` and ``on_batch(step, total_steps, loss)`` feed live curves.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    if cfg.sparse_lambda > 0 and dg is None:
        raise PruneStudioError("sparse learning needs the model's dependency graph (analyze it first)")
    progress = progress or (lambda *a, **k: None)

    def check():
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")

    rank, world, device = init_distributed(cfg.device)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(model).to(device)
    net.train()
    if teacher is not None:
        teacher = copy.deepcopy(teacher).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    reg = None
    if cfg.sparse_lambda > 0:
        from core.train.sparse import GroupSparsity
        reg = GroupSparsity(net, dg, lam=cfg.sparse_lambda, alpha=cfg.sparse_alpha,
                            schedule=cfg.sparse_schedule, warmup=cfg.sparse_warmup)
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    probe = train_loader(data, 0, cfg.seed, world, rank)
    steps = len(probe) if cfg.max_batches is None else min(len(probe), cfg.max_batches)
    total_steps = max(1, steps * cfg.epochs)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    ddp = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    history: list[dict] = []
    start_epoch, resumed = 0, None
    ckpt_path = os.path.join(cfg.checkpoint_dir, CHECKPOINT_NAME) if cfg.checkpoint_dir else None
    if cfg.resume:
        state = load_checkpoint(ckpt_path)
        check_shapes(net, state["model"], ckpt_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng") is not None:
            torch.set_rng_state(state["rng"])
        start_epoch = resumed = int(state["epoch"])
        history = list(state.get("history", []))
        if start_epoch > cfg.epochs:
            raise PruneStudioError(f"checkpoint {ckpt_path} is at epoch {start_epoch}, beyond the "
                                   f"{cfg.epochs} epochs asked for")
    val = data.val_loader()
    step = start_epoch * steps
    for epoch in range(start_epoch, cfg.epochs):
        loader = train_loader(data, epoch, cfg.seed, world, rank)
        net.train()
        te = time.perf_counter()
        sum_loss, sum_reg, n_seen, correct = 0.0, 0.0, 0, 0
        for i, batch in enumerate(loader):
            if i >= steps:
                break
            check()
            _wait_if_paused(paused, should_stop, progress, f"paused in epoch {epoch + 1}")
            x, y = split_batch(batch)
            x, y = to_device(x, device), to_device(y, device)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                out = call_model(ddp, x)
                loss = compute_loss(out, y, loss_fn)
                if teacher is not None:
                    with torch.no_grad():
                        t_out = call_model(teacher, x)
                    if isinstance(out, torch.Tensor) and out.ndim == 2:
                        kd = distill_loss(out, t_out, cfg.temperature)
                    else:
                        kd = F.mse_loss(out.float(), t_out.float())
                    loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
            total = loss
            if reg is not None:
                r = reg.penalty(step / total_steps)
                total = total + r
                sum_reg += float(r.detach())
            if not torch.isfinite(total.detach()).all():
                raise diverged(cfg, f"the loss became {float(total.detach()):g} at step {step + 1} "
                                    f"(epoch {epoch + 1}, batch {i + 1})")
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            bs = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim > 0 else 1
            sum_loss += float(loss.detach()) * bs
            n_seen += bs
            if is_classification(out, y):
                correct += int((out.argmax(1) == y).sum())
            if on_batch is not None:
                on_batch(step, total_steps, float(loss.detach()))
            progress("train", step, total_steps,
                     f"epoch {epoch + 1}/{cfg.epochs} loss {sum_loss / max(n_seen, 1):.4f}")
        rec = {"epoch": epoch + 1, "train_loss": sum_loss / max(n_seen, 1),
               "train_acc": correct / n_seen if n_seen else None,
               "reg": sum_reg / max(steps, 1) if reg is not None else None,
               "lr": opt.param_groups[0]["lr"]}
        if evaluate_each_epoch and val is not None:
            ev = evaluate(net, val, loss_fn, device, should_stop=should_stop)
            rec.update(val_loss=ev.loss, top1=ev.top1, top5=ev.top5)
        if reg is not None:
            rec["sparsity"] = reg.sparsity(cfg.sparsity_threshold)
        elif dg is not None:
            from core.train.sparse import group_sparsity
            rec["sparsity"] = group_sparsity(net, dg, cfg.sparsity_threshold)
        rec["seconds"] = time.perf_counter() - te
        broken = non_finite_tensors(net)
        if broken:
            raise diverged(cfg, f"after epoch {epoch + 1}, {len(broken)} of "
                                f"{len(net.state_dict())} tensors hold NaN or inf (first: {broken[0]})")
        history.append(rec)
        if ckpt_path and rank == 0:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": net.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None, "history": history,
                "config": asdict(cfg), "rng": torch.get_rng_state()})
        barrier(world)
        if on_epoch is not None:
            on_epoch(dict(rec))
        progress("train", step, total_steps,
                 f"epoch {epoch + 1}/{cfg.epochs} done" +
                 (f", val top-1 {rec['top1']:.2%}" if rec.get("top1") is not None else ""))
        check()
    net.eval()
    final = None
    if val is not None:
        final = evaluate(net, val, loss_fn, device, should_stop=should_stop)
    return TrainResult(net, history, final, time.perf_counter() - t0, resumed)
