"""The generic training loop: schedule, weight-decay groups, logging, checkpoints, exact resume."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.tiny import tiny_model  # noqa: E402
from train import stages  # noqa: E402
from train.trainer import (  # noqa: E402
    LOG_FILE,
    STATE_FILE,
    TrainConfig,
    batch_generator,
    load_training_state,
    lr_at,
    param_groups,
    run,
)


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    cfg = TrainConfig(max_steps=110, lr=1e-3, min_lr=1e-4, warmup_lr=1e-6, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-6)
    assert lr_at(5, cfg) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    after = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))


def test_weight_decay_only_on_matrices_not_biases_or_norms():
    model = tiny_model(with_llm=False)
    named = stages.branch_parameters(model, ("video",))
    decay, no_decay = param_groups(named, 0.05)
    names = {id(p): n for n, p in named}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "video_proj.weight" in decayed
    assert "video_qformer.layers.0.self_attn.q_proj.weight" in decayed
    assert "frame_position_embedding.weight" in decayed  # 2-D, as in the original
    assert "video_qformer.query_tokens" in decayed  # 3-D parameter, not a bias or norm
    assert not any(n.endswith(".bias") for n in decayed)
    assert not any("norm" in n for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_lr_scale_gives_a_module_groups_of_its_own():
    model = tiny_model(with_llm=False)
    named = stages.branch_parameters(model, ("video",))
    groups = param_groups(named, 0.05, {"video_proj": 4.0})
    names = {id(p): n for n, p in named}
    by_group = [({names[id(p)] for p in g["params"]}, g["lr_scale"], g["weight_decay"]) for g in groups]
    assert [(scale, wd) for _, scale, wd in by_group] == [(1.0, 0.05), (1.0, 0.0), (4.0, 0.05), (4.0, 0.0)]
    assert by_group[2][0] == {"video_proj.weight"} and by_group[3][0] == {"video_proj.bias"}
    assert not any(n.startswith("video_proj") for n in by_group[0][0] | by_group[1][0])
    assert sum(len(g["params"]) for g in groups) == len(named)
    with pytest.raises(ValueError, match="vision_encoder"):
        param_groups(named, 0.05, {"vision_encoder": 3.0})  # not trained in this stage: a typo or a mix-up


def test_run_applies_the_lr_scale(tmp_path):
    model, params, batch_fn, loss_fn = _setup()
    before = {n: p.detach().clone() for n, p in params}
    run("t", params, loss_fn, batch_fn, _cfg(max_steps=4, lr_scale={"video_proj": 0.0}), tmp_path,
        lambda d: None, show_progress=False)
    moved = {n for n, p in params if not torch.equal(p.detach(), before[n])}
    assert moved and not any(n.startswith("video_proj") for n in moved)  # scale 0: frozen in place
    assert "video_qformer.query_tokens" in moved
    groups = load_training_state(tmp_path / STATE_FILE)["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 0.0, 0.0]
    assert groups[0]["lr"] > 0 and groups[2]["lr"] == 0.0


def _setup(seed=0):
    """A tiny video adapter regressing its tokens onto fixed random targets."""
    model = tiny_model(with_llm=False, seed=seed)
    model.train()
    params = stages.branch_parameters(model, ("video",))
    feats = torch.randn(32, 3, 6, 32, generator=torch.Generator().manual_seed(1))
    target = torch.randn(32, 5, 48, generator=torch.Generator().manual_seed(2))

    def batch_fn(index, rank, world):
        return torch.randint(32, (4,), generator=batch_generator(3, index, rank))

    def loss_fn(rows):
        out = model.video_tokens(feats[rows])  # dropout active: the RNG state matters on resume
        return torch.nn.functional.mse_loss(out, target[rows]), len(rows)

    return model, params, batch_fn, loss_fn


def _cfg(**kw):
    base = dict(max_steps=8, batch_size=4, grad_accum=2, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                log_every=2, save_every=4, mixed_precision="no")
    return TrainConfig(**{**base, **kw})


def test_run_lowers_the_loss_logs_and_checkpoints(tmp_path):
    model, params, batch_fn, loss_fn = _setup()
    saved = []
    result = run("t", params, loss_fn, batch_fn, _cfg(max_steps=20, save_every=10), tmp_path,
                 lambda d: saved.append(d.name), show_progress=False)
    assert (result.start_step, result.end_step, len(result.losses)) == (0, 20, 20)
    assert sum(result.losses[-4:]) < sum(result.losses[:4])
    rows = [json.loads(x) for x in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(2, 21, 2))
    assert all({"loss", "lr", "samples_per_s", "stage"} <= set(r) for r in rows)
    assert saved == ["model", "model"]
    state = load_training_state(tmp_path / STATE_FILE)
    assert state["step"] == 20 and set(state["params"]) == {n for n, _ in params}


def test_resume_after_interruption_continues_exactly(tmp_path):
    cfg = _cfg()
    _, params, batch_fn, loss_fn = _setup()
    straight = run("t", params, loss_fn, batch_fn, cfg, tmp_path / "a", lambda d: None, show_progress=False)
    final = {n: p.detach().clone() for n, p in params}

    _, params, batch_fn, loss_fn = _setup()

    def interrupted(index, rank, world):
        if index == 10:  # micro-step 10 = optimizer step 5, after the checkpoint at step 4
            raise KeyboardInterrupt
        return batch_fn(index, rank, world)

    with pytest.raises(KeyboardInterrupt):
        run("t", params, loss_fn, interrupted, cfg, tmp_path / "b", lambda d: None, show_progress=False)
    assert load_training_state(tmp_path / "b" / STATE_FILE)["step"] == 4

    _, params, batch_fn, loss_fn = _setup(seed=5)  # fresh weights: resume must restore them
    resumed = run("t", params, loss_fn, batch_fn, cfg, tmp_path / "b", lambda d: None, resume=True,
                  show_progress=False)
    assert (resumed.start_step, resumed.end_step) == (4, 8)
    assert resumed.losses == pytest.approx(straight.losses[4:], rel=1e-5)
    for n, p in params:
        torch.testing.assert_close(p.detach(), final[n])


def test_resume_refuses_a_state_of_other_parameters(tmp_path):
    _, params, batch_fn, loss_fn = _setup()
    run("t", params, loss_fn, batch_fn, _cfg(max_steps=4), tmp_path, lambda d: None, show_progress=False)
    model = tiny_model(with_llm=False)
    audio = stages.branch_parameters(model, ("audio",))
    with pytest.raises(ValueError, match="different set of trainable parameters"):
        run("t", audio, loss_fn, batch_fn, _cfg(max_steps=6), tmp_path, lambda d: None, resume=True,
            show_progress=False)


def test_no_trainable_parameters_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no trainable parameters"):
        run("t", [], lambda b: (torch.zeros(()), 1), lambda i, r, w: None, _cfg(), tmp_path, lambda d: None)


def _distributed_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    # What `torchrun --nproc_per_node 2` sets; accelerate's Accelerator reads it.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    torch.set_num_threads(1)
    from train.trainer import make_accelerator

    cfg = _cfg(max_steps=3, save_every=3)
    acc = make_accelerator(cfg)
    assert acc.num_processes == world and acc.process_index == rank
    _, params, batch_fn, loss_fn = _setup()
    run("t", params, loss_fn, batch_fn, cfg, out_dir, lambda d: None, accelerator=acc, show_progress=False)
    torch.save({n: p.detach() for n, p in params}, os.path.join(out_dir, f"rank{rank}.pt"))
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_average_gradients_and_stay_in_sync(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for name in a:
        torch.testing.assert_close(a[name], b[name])  # same averaged update on both ranks
    _, params, _, _ = _setup()
    start = dict(params)
    assert any(not torch.equal(a[n], start[n].detach()) for n in a)  # and they did train
    assert load_training_state(tmp_path / STATE_FILE)["step"] == 3


def test_exact_answers_marks_an_example_right_only_when_every_labelled_token_is_predicted():
    from tests.tiny import tiny_llm

    torch.manual_seed(0)
    llm = tiny_llm().eval()
    ids = torch.randint(5, 60, (2, 7))
    with torch.no_grad():
        greedy = llm(input_ids=ids).logits.argmax(-1)  # (2, 7): what each position predicts next
    labels = torch.full_like(ids, stages.IGNORE)
    labels[:, 3:6] = greedy[:, 2:5]  # tokens 3..5 labelled with exactly what the model predicts there
    labels[1, 5] = (greedy[1, 4] + 1) % llm.config.vocab_size  # one wrong token in the second example
    embeds = llm.get_input_embeddings()(ids)
    mask = torch.ones_like(ids)
    assert stages.exact_answers(llm, embeds, mask, labels) == [True, False]


def test_backprop_precision_is_bf16_on_a_gpu_and_on_a_cpu_with_native_bf16(monkeypatch):
    import model.device

    monkeypatch.setattr(model.device, "cpu_has_native_bf16", lambda: True)
    assert stages.backprop_llm_precision(torch.device("cpu")) == "bf16"
    monkeypatch.setattr(model.device, "cpu_has_native_bf16", lambda: False)
    assert stages.backprop_llm_precision(torch.device("cpu")) == "fp32"
    assert stages.backprop_llm_precision(torch.device("cuda")) == "bf16"
    assert stages.backprop_llm_precision(torch.device("cpu"), "bf16") == "bf16"  # asked for, always given
    with pytest.raises(ValueError, match="fp32, bf16"):
        stages.backprop_llm_precision(torch.device("cpu"), "fp8")


def test_a_bf16_llm_on_the_cpu_gets_plain_attention_and_passes_on_the_fp32_gradient():
    import copy

    from tests.tiny import tiny_llm

    torch.manual_seed(0)
    llm32 = tiny_llm().eval()
    llm16 = copy.deepcopy(llm32).to(torch.bfloat16)
    stages.prepare_backprop_llm(llm32, torch.device("cpu"))
    stages.prepare_backprop_llm(llm16, torch.device("cpu"))
    assert llm16.config._attn_implementation == "eager"
    assert llm32.config._attn_implementation != "eager"  # fp32 keeps the fused kernel
    embeds = torch.randn(2, 10, llm32.config.hidden_size) * 0.5  # soft tokens, as the adapters give
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # right padding, as assemble() pads
    labels = torch.full((2, 10), stages.IGNORE)
    labels[0, 6:10] = torch.randint(5, 60, (4,))
    labels[1, 4:7] = torch.randint(5, 60, (3,))
    grads, losses = [], []
    for llm in (llm32, llm16):
        x = embeds.clone().requires_grad_(True)
        loss = stages.supervised_lm_loss(llm, x, mask, labels)
        loss.backward()
        grads.append(x.grad.flatten())
        losses.append(loss.item())
    assert grads[1].dtype == torch.float32  # the adapters upstream stay fp32
    assert abs(losses[1] - losses[0]) < 0.02 * losses[0]
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.98
    assert grads[1].abs().sum() > 0


def _scaled_accelerator():
    """An accelerator with a loss scaler, as fp16 on a GPU has (here on the CPU): it doubles
    its scale after every step without overflow, so the scale tells how many steps it saw."""
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision="no")
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    return acc


def test_resume_keeps_the_fp16_loss_scale(tmp_path):
    cfg = _cfg(max_steps=6, save_every=3)
    _, params, batch_fn, loss_fn = _setup()
    straight_acc = _scaled_accelerator()
    straight = run("t", params, loss_fn, batch_fn, cfg, tmp_path / "a", lambda d: None,
                   accelerator=straight_acc, show_progress=False)
    assert straight_acc.scaler.get_scale() == 2.0**16  # 6 steps, no overflow

    _, params, batch_fn, loss_fn = _setup()  # 3 steps: 2 of warm-up and the cosine's first, as in the 6
    run("t", params, loss_fn, batch_fn, _cfg(max_steps=3, save_every=3), tmp_path / "b", lambda d: None,
        accelerator=_scaled_accelerator(), show_progress=False)
    assert load_training_state(tmp_path / "b" / STATE_FILE)["scaler"]["scale"] == 2.0**13
    _, params, batch_fn, loss_fn = _setup(seed=5)
    acc = _scaled_accelerator()  # a fresh process: its scaler starts again at 2**10
    resumed = run("t", params, loss_fn, batch_fn, cfg, tmp_path / "b", lambda d: None, accelerator=acc,
                  resume=True, show_progress=False)
    assert resumed.start_step == 3 and acc.scaler.get_scale() == 2.0**16
    assert resumed.losses == pytest.approx(straight.losses[3:], rel=1e-5)
