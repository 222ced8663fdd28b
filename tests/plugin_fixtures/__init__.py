"""Test material for the plugin tests: helpers, plugin files and a tiny installable distribution."""
