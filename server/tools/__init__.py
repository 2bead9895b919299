"""Tools outside the serving path: the mock upstream, the load tester, the terminal viewer."""
