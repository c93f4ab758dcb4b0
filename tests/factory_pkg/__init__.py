"""A user's own package, as `--factory factory_pkg.models:build` imports it in the factory-family tests."""
