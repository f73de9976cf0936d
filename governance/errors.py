"""The errors governance raises (stable public path for plugin authors; defined in :mod:`governance.contract.errors`)."""

from governance.contract.errors import (  # noqa: F401
    ConfigError, DataError, GovernanceError, MethodError, ModelLoadError, ModelResolutionError, PluginError,
    ReportError, TrackingError,
)

__all__ = ["GovernanceError", "ConfigError", "PluginError", "ModelResolutionError", "ModelLoadError", "DataError",
           "TrackingError", "MethodError", "ReportError"]
