"""Gradient checks of JAX functions, ``jax.custom_vjp`` ones included: every element, in
reverse mode, with handgrad's report. Needs the ``jax`` extra (``pip install
'handgrad[jax]'``); JAX is imported when a check runs, not before."""

from handgrad.interop.jax_check import check_grads, gradient_report

__all__ = ["check_grads", "gradient_report"]
