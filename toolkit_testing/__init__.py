"""Helpers shared by the tests (tests/) and the benchmarks (benchmarks/): reference implementations the results
are compared with, stand-in networks and images, a synthetic official release, and ways to watch, pause and run
processes. Installed with the packages so that both import it by name; no package imports it
(tests/test_import_graph.py)."""
