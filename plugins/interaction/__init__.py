"""Shared AND/OR interaction primitives across model versions (Chen, Lou, Huang & Zhang, ICLR 2024).

Registers the ``interaction`` method. Kept import-light: the method and its NumPy/SciPy code load only when
the host asks for the method.
"""

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)


@hookimpl
def register_methods(register):
    from governance_plugins.interaction.method import InteractionMethod

    register(InteractionMethod)
