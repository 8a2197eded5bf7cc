"""Helpers for the custom derivative rules (``jax.custom_jvp``) of fixed points and roots."""

from __future__ import annotations

import equinox as eqx
import jax


def _is_none(x) -> bool:
    return x is None


def split_by_tangent(tree, tangents):
    """``(dynamic, static, t_dynamic)``: the leaves of ``tree`` that carry a tangent
    (``tangents`` not ``None`` there, as :func:`equinox.filter_custom_jvp` passes
    them), the rest, and those tangents; ``eqx.combine(dynamic, static)`` is ``tree``.
    A JVP over ``dynamic`` alone skips the work of the symbolic-zero tangents."""
    if tangents is None:
        return None, tree, None
    mask = jax.tree.map(lambda t: t is not None, tangents, is_leaf=_is_none)
    dynamic, static = eqx.partition(tree, mask)
    return dynamic, static, eqx.filter(tangents, mask, is_leaf=_is_none)
