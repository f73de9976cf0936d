"""governance plugin: gradient x input attributions.

This module is what the ``governance.plugins`` entry point names. governance imports it whenever it lists or
runs plugins (even for ``governance --help``), so it imports nothing heavy: the method class, torch and
matplotlib are imported inside the hook.
"""

from governance import hookimpl

#: the hook API this plugin was written for (major must match the host's; see docs/hooks.md)
GOVERNANCE_HOOK_API = (1, 0)


@hookimpl
def register_methods(register):
    from governance_gradinput.method import GradientInput

    register(GradientInput)
