"""Other frameworks as oracles and hosts: PyTorch autograd compared with handgrad's
gradients, and handgrad's layers as torch.autograd Functions (``handgrad.torch``)."""
