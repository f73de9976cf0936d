"""NeFLAG (negative flux aggregation) attributions, with Integrated Gradients and Saliency as baselines and
the shared explanation-quality metrics. Kept cheap to import: the method loads on registration only."""

from governance import hookimpl

GOVERNANCE_HOOK_API = (1, 0)


@hookimpl
def register_methods(register):
    from governance_plugins.neflag.method import NeflagMethod

    register(NeflagMethod)
