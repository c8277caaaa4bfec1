"""The PyTorch reference model: the yardstick every exported artifact is measured against."""
