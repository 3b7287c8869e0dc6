"""Host-to-device copies that do not wait for the GPU: the rows an operation applies to, chosen on the host."""

import pytest
import torch

from weakdml.transfer import chosen_rows, to_device


def test_chosen_rows_are_the_masks_positions_in_order_or_none():
    mask = torch.tensor([False, True, True, False, True])
    rows = chosen_rows(mask, torch.device("cpu"))
    assert torch.equal(rows, torch.tensor([1, 2, 4]))
    x = torch.arange(50).view(5, 10)
    assert torch.equal(x[rows], x[mask])  # the same rows, in the same order, as boolean indexing
    assert chosen_rows(torch.zeros(5, dtype=torch.bool), torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_copies_arrive_intact_without_waiting():
    values = torch.randn(1000)
    on_gpu = to_device(values, torch.device("cuda"))
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), values)
    rows = chosen_rows(values > 0, torch.device("cuda"))
    assert rows.is_cuda and torch.equal(rows.cpu(), (values > 0).nonzero().squeeze(1))
