"""Kernels SGLang imports from `sgl_kernel` at module level but this CPU package does not implement."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def missing_kernel(module_name: str, name: str) -> Callable[..., None]:
    """A function named `name` that raises `NotImplementedError` when called.

    SGLang imports these names when its modules load (behind `is_cpu()`); a model or option
    that actually calls one needs a real sgl-kernel build, and must say so instead of
    computing something wrong.
    """

    def missing(*args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            f"{module_name}.{name} is not implemented by ScaleSim's pure-PyTorch sgl_kernel; "
            "this model or option needs a real sgl-kernel build"
        )

    missing.__name__ = name
    missing.__qualname__ = name
    return missing


def missing_kernels(module_name: str, names: Iterable[str]) -> dict[str, Callable[..., None]]:
    """`missing_kernel` for each name, for a module's `globals().update(...)`."""
    return {name: missing_kernel(module_name, name) for name in names}
