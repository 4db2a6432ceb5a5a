"""Evaluation and benchmark scripts: they score the product from outside, through its public services."""
