"""The published plugin contract: hook specifications, the Method base class, what methods return, the
model and dataset views a method receives, and the errors it may raise.

Everything a plugin author needs is re-exported from the top-level package (``from governance import Method,
Explanation, ...``), from :mod:`governance.errors`, :mod:`governance.figures` and :mod:`governance.quality`.
Nothing in here imports the host, the run machinery or the report.
"""
