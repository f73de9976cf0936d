"""Headless matplotlib for method figures (stable public path; defined in :mod:`governance.contract.figures`)."""

from governance.contract.figures import pyplot  # noqa: F401

__all__ = ["pyplot"]
