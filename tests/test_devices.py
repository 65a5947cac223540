import pytest
import torch

from engine.model.devices import DeviceError, choose_device, cpu_supports_bf16


def test_cpu_is_exact_fp32_by_default():
    c = choose_device("cpu")
    assert c.device.type == "cpu" and c.dtype == torch.float32


def test_auto_falls_back_to_cpu_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert choose_device("auto").device.type in ("cpu", "mps")


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="CUDA"):
        choose_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        choose_device("tpu")


def test_fast_mode_is_bf16_only_where_supported():
    if cpu_supports_bf16():
        assert choose_device("cpu", fast=True).dtype == torch.bfloat16
    else:
        with pytest.raises(DeviceError, match="bf16"):
            choose_device("cpu", fast=True)
