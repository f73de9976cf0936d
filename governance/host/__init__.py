"""The host: plugin discovery and isolation, model resolution and loading (runtimes), data sources, the
settings file and the tracking-store client. It knows the contract, never the run or the report."""
