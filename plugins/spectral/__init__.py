"""Spectral surrogate (SpecXAI-inspired reconstruction): a global Chebyshev expansion of a network.

Kept cheap to import: the method and its numpy/matplotlib code load only when the host registers it.
"""

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)


@hookimpl
def register_methods(register):
    from governance_plugins.spectral.method import SpectralSurrogate

    register(SpectralSurrogate)
