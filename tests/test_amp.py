"""Mixed precision by compute capability (issue 29, item 5): the decision, without a GPU.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest -q tests/test_amp.py
"""
from __future__ import annotations

import pytest
import torch

from c3dhash.eval.index.encode import amp_dtype, amp_name

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("capability,dtype", [
    ((12, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((8, 6), torch.bfloat16), ((8, 0), torch.bfloat16),
    ((7, 5), torch.float16),  # T4: bf16 Conv3d has no cuDNN kernel before sm_80
    ((7, 0), None), ((6, 1), None)])
def test_auto_picks_bf16_from_sm80_fp16_on_sm75_fp32_before(capability, dtype):
    assert amp_dtype("auto", CUDA, capability) is dtype


def test_cpu_auto_is_fp32_and_explicit_choices_win():
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("off", CUDA, (9, 0)) is None
    assert amp_dtype("bf16", CUDA, (7, 5)) is torch.bfloat16 and amp_dtype("fp16", CUDA, (9, 0)) is torch.float16
    assert [amp_name(d) for d in (torch.bfloat16, torch.float16, None)] == ["bf16", "fp16 + GradScaler", "fp32"]


def test_trainer_scales_the_loss_only_for_fp16(capsys):
    from c3dhash.distributed.job import JobConfig
    from c3dhash.distributed.config import TrainConfig
    from c3dhash.distributed.trainer import Trainer

    class Loader(list):
        batch_size = 1

        def set_epoch(self, epoch, *, start_step=0):
            pass
    net = torch.nn.Linear(4, 8)
    for amp, scaled in (("auto", False), ("fp16", True)):
        t = Trainer(job=JobConfig(train=TrainConfig(amp=amp)), model=net, device=torch.device("cpu"),
                    train_loader=Loader([None]), queries=None, database=None, run_dir=".")
        assert t.scaler.is_enabled() is scaled and ("scaler" in t.state_dict()) is scaled
    out = capsys.readouterr().out
    assert "mixed precision: fp32 (train.amp=auto on cpu)" in out and "mixed precision: fp16 + GradScaler" in out
